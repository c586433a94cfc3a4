"""The keyed chain: audit keys, their rotation, and what a writer without the key can do."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lkps.audit.chain import (
    GENESIS_HASH,
    ChainKey,
    ChainVerification,
    hashed_text,
    hmac_pads,
    record_hash,
    verify_chain,
)
from lkps.audit.keys import AuditKeys, chain_key, dev_key, load_audit_keys, parse_key
from lkps.audit.records import AuditRecord
from lkps.config import ConfigurationError, Settings

pytestmark = pytest.mark.unit

KEY = chain_key(b"k" * 32)
OLD_KEY = chain_key(b"o" * 32)


def chain(
    length: int, keys: Iterable[ChainKey | None], *, start: int = 1, previous: str = GENESIS_HASH
) -> list[AuditRecord]:
    """`length` records chained after `previous`, the n-th under the n-th of `keys`."""
    records: list[AuditRecord] = []
    moment = datetime(2026, 12, 6, tzinfo=UTC)
    for seq, key in zip(range(start, start + length), keys, strict=True):
        fields: dict[str, Any] = {
            "seq": seq,
            "record_id": f"r{seq}",
            "occurred_at": moment + timedelta(seconds=seq),
            "event": "session.start",
            "outcome": "denied" if seq % 2 else "granted",
            "status": 403 if seq % 2 else 200,
            "reason": None,
            "request_id": f"q{seq}",
            "actor_tenant_id": "t",
            "actor_object_id": "o",
            "actor_cwid": "alice",
            "client_app_id": "c",
            "agent_id": "a",
            "room_name": None,
            "registration_id": None,
            "client_ip": "203.0.113.7",
            "details": None,
            "prev_hash": previous,
            "key_id": key.key_id if key else None,
        }
        previous = record_hash(fields, key)
        records.append(AuditRecord(**fields, hash=previous))
    return records


async def stream(records: Iterable[AuditRecord]) -> AsyncIterator[AuditRecord]:
    for record in records:
        yield record


async def verify(records: list[AuditRecord], **options: Any) -> ChainVerification:
    head = records[-1] if records else None
    return await verify_chain(
        stream(records),
        head.seq if head else 0,
        head.hash if head else GENESIS_HASH,
        **options,
    )


def rechain(records: list[AuditRecord], key: ChainKey | None) -> list[AuditRecord]:
    """What a writer without the audit key can do: recompute every link, unkeyed or
    under a key of its own choosing (naming the real key's id or not)."""
    previous = GENESIS_HASH
    rewritten: list[AuditRecord] = []
    for record in records:
        fields = {**dataclasses.asdict(record), "prev_hash": previous}
        fields.pop("hash")
        fields["key_id"] = key.key_id if key else None
        previous = record_hash(fields, key)
        rewritten.append(AuditRecord(**fields, hash=previous))
    return rewritten


def test_the_keyed_link_is_hmac_sha256_under_the_record_key() -> None:
    record = chain(1, [KEY])[0]
    text = hashed_text(dataclasses.asdict(record))
    message = f"{text.before_prev}{GENESIS_HASH}{text.before_seq}1{text.after_seq}".encode()
    record_key = hmac.new(KEY.secret, b"lkps-audit-record\x00r1", hashlib.sha256).digest()
    assert record.hash == hmac.new(record_key, message, hashlib.sha256).hexdigest()
    # What PostgreSQL computes from the pads with its core sha256().
    ipad, opad = hmac_pads(record_key)
    inner = hashlib.sha256(ipad + message).digest()
    assert hashlib.sha256(opad + inner).hexdigest() == record.hash


async def test_a_keyed_chain_verifies_with_its_key_only() -> None:
    records = chain(5, [KEY] * 5)
    assert (await verify(records, keys={KEY.key_id: KEY})).ok
    without = await verify(records)
    assert not without.ok and without.broken_at_seq == 1
    assert f"audit key {KEY.key_id}, which was not given" in (without.problem or "")


@pytest.mark.parametrize(
    "forger",
    [None, ChainKey(KEY.key_id, b"guess" * 8), chain_key(b"m" * 32)],
    ids=["unkeyed", "guessed-key-same-id", "own-key"],
)
async def test_a_rewritten_and_rechained_trail_is_found(forger: ChainKey | None) -> None:
    """Review finding (b): a denied record turned granted for another user, and every
    later link recomputed. Plain SHA-256 let that verify; a keyed chain does not."""
    records = chain(6, [KEY] * 6)
    forged = dataclasses.replace(records[2], outcome="granted", status=200, actor_cwid="mallory")
    tampered = rechain([*records[:2], forged, *records[3:]], forger)
    result = await verify(tampered, keys={KEY.key_id: KEY})
    assert not result.ok and result.broken_at_seq == 1


async def test_rotation_old_records_verify_with_the_old_key() -> None:
    old = chain(3, [OLD_KEY] * 3)
    new = chain(3, [KEY] * 3, start=4, previous=old[-1].hash)
    records = [*old, *new]
    keys = AuditKeys(KEY, (OLD_KEY,)).by_id()
    assert (await verify(records, keys=keys)).ok
    only_new = await verify(records, keys={KEY.key_id: KEY})
    assert not only_new.ok and OLD_KEY.key_id in (only_new.problem or "")


async def test_unkeyed_records_before_the_upgrade_need_saying_so() -> None:
    legacy = chain(3, [None] * 3)
    keyed = chain(2, [KEY] * 2, start=4, previous=legacy[-1].hash)
    keys = {KEY.key_id: KEY}
    refused = await verify([*legacy, *keyed], keys=keys)
    assert not refused.ok and "without an audit key" in (refused.problem or "")
    assert (await verify([*legacy, *keyed], keys=keys, legacy_until=3)).ok
    # Without keys, an all-unkeyed (legacy) trail verifies as it always did.
    assert (await verify(legacy)).ok


async def test_checkpoints_find_a_truncated_tail_the_key_cannot() -> None:
    """Review finding (a): the newest records removed and the head rewound leave a
    valid shorter chain; a checkpoint signed after them shows it."""
    records = chain(6, [KEY] * 6)
    keys = {KEY.key_id: KEY}
    truncated = records[:4]
    assert (await verify(truncated, keys=keys)).ok  # what the key alone can say
    result = await verify(truncated, keys=keys, checkpoints={6: records[5].hash})
    assert not result.ok and result.broken_at_seq == 5
    assert "truncated" in (result.problem or "")


async def test_checkpoints_alone_find_a_rewrite_without_the_key() -> None:
    records = chain(6, [KEY] * 6)
    signed = {3: records[2].hash, 6: records[5].hash}
    intact = await verify(records, checkpoints=signed)
    assert intact.ok and intact.contents_unchecked == 6 and intact.checkpoints_checked == 2
    assert "not checked" in intact.describe()
    forged = dataclasses.replace(records[4], actor_cwid="mallory")
    rewritten = rechain([*records[:4], forged, records[5]], chain_key(b"m" * 32))
    result = await verify(rewritten, checkpoints=signed)
    assert not result.ok and "signed checkpoint" in (result.problem or "")


async def test_records_past_the_newest_checkpoint_need_their_key() -> None:
    """A record after the newest checkpoint, naming a key that was not given, is bound
    by nothing: with keys given it fails (a writer could name a bogus key)."""
    records = chain(4, [KEY] * 4)
    bogus = rechain(records, chain_key(b"b" * 32))
    result = await verify(bogus, keys={KEY.key_id: KEY}, checkpoints={2: bogus[1].hash})
    assert not result.ok and result.broken_at_seq == 3


def test_keys_from_the_environment_or_a_file(tmp_path: Path) -> None:
    secret = "s" * 40
    path = tmp_path / "audit.key"
    path.write_text(secret + "\n")
    old = tmp_path / "old.key"
    old.write_text("o" * 32)
    from_value = load_audit_keys(Settings(env="prod", audit_key=secret))
    from_file = load_audit_keys(
        Settings(env="prod", audit_key_file=path, audit_previous_key_files=f"{old}")
    )
    assert from_value is not None and from_file is not None
    assert from_value.current == from_file.current == parse_key(secret, "x")
    assert len(from_value.current.key_id) == 16 and secret not in repr(from_value)
    assert [key.key_id for key in from_file.previous] == [chain_key(b"o" * 32).key_id]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"audit_key": "short"}, "at least 32 characters"),
        ({"audit_key": "a" * 32, "audit_key_file": "x"}, "not both"),
        ({"audit_key_file": "/nonexistent/audit.key"}, "cannot be read"),
        ({"audit_previous_key_files": "/nonexistent/old.key"}, "cannot be read"),
    ],
)
def test_bad_keys_are_refused(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_audit_keys(Settings(env="prod", **values))  # type: ignore[arg-type]


def test_dev_derives_a_stable_key_and_prod_has_none_without_one() -> None:
    url = "sqlite+aiosqlite:///./var/lkps.db"
    dev = load_audit_keys(Settings(env="dev", database_url=url))
    assert dev is not None and dev.current == dev_key(url) != dev_key(url + "2")
    assert load_audit_keys(Settings(env="prod", database_url=url)) is None
