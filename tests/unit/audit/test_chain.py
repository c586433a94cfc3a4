"""The chain verifier finds edits, removals and a truncated tail."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lkps.audit.chain import (
    GENESIS_HASH,
    hash_of,
    hashed_text,
    record_hash,
    verify_chain,
)
from lkps.audit.records import AuditRecord

pytestmark = pytest.mark.unit


def make_chain(length: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    previous = GENESIS_HASH
    start = datetime(2026, 11, 23, tzinfo=UTC)
    for seq in range(1, length + 1):
        fields: dict[str, Any] = {
            "seq": seq,
            "record_id": f"r{seq}",
            "occurred_at": start + timedelta(microseconds=seq * 1001),
            "event": "session.start",
            "outcome": "granted",
            "status": 200,
            "reason": None,
            "request_id": f"q{seq}",
            "actor_tenant_id": "t",
            "actor_object_id": "o",
            "actor_cwid": "alice",
            "client_app_id": "c",
            "agent_id": "a",
            "room_name": f"room-{seq}",
            "registration_id": None,
            "client_ip": "203.0.113.7",
            "details": '{"k":"ü"}',
            "prev_hash": previous,
        }
        previous = record_hash(fields)
        records.append(AuditRecord(**fields, hash=previous))
    return records


async def stream(records: Iterable[AuditRecord]) -> AsyncIterator[AuditRecord]:
    for record in records:
        yield record


async def verify(records: list[AuditRecord], head: tuple[int, str] | None = None):  # type: ignore[no-untyped-def]
    head_seq, head_hash = (
        head or (records[-1].seq, records[-1].hash) if records else (0, GENESIS_HASH)
    )
    return await verify_chain(stream(records), head_seq, head_hash)


async def test_intact_chain_verifies() -> None:
    result = await verify(make_chain(20))
    assert result.ok and result.records_checked == 20


async def test_empty_chain_verifies() -> None:
    assert (await verify_chain(stream([]), 0, GENESIS_HASH)).ok


@pytest.mark.parametrize(
    "field", ["actor_cwid", "status", "room_name", "details", "occurred_at", "outcome"]
)
async def test_edited_record_is_found(field: str) -> None:
    records = make_chain(10)
    value: Any = {"status": 403, "occurred_at": records[6].occurred_at + timedelta(seconds=1)}.get(
        field, "tampered"
    )
    records[6] = dataclasses.replace(records[6], **{field: value})
    result = await verify(records, (10, records[9].hash))
    assert not result.ok and result.broken_at_seq == 7 and "edited" in str(result.problem)


async def test_removed_record_is_found() -> None:
    records = make_chain(10)
    del records[3]
    result = await verify(records, (10, records[-1].hash))
    assert not result.ok and result.broken_at_seq == 4 and "missing" in str(result.problem)


async def test_re_hashed_record_still_breaks_the_next_link() -> None:
    records = make_chain(10)
    forged = dataclasses.replace(records[4], actor_cwid="mallory")
    records[4] = dataclasses.replace(forged, hash=hash_of(forged))
    result = await verify(records, (10, records[9].hash))
    assert not result.ok and result.broken_at_seq == 6 and "link" in str(result.problem)


async def test_truncated_tail_is_found_from_the_head() -> None:
    records = make_chain(10)
    result = await verify(records[:8], (10, records[9].hash))
    assert not result.ok and result.broken_at_seq == 9
    assert "head is at 10" in result.describe()


# The hashed text: one definition, split around the links for whoever holds the head.

KNOWN_FIELDS: dict[str, Any] = {
    "seq": 42,
    "record_id": 'r"42',
    "occurred_at": datetime(2026, 11, 23, 21, 24, 41, 123456, tzinfo=UTC),
    "event": "session.start",
    "outcome": "granted",
    "status": 200,
    "reason": '"prev_hash":"" and "seq":0 \\ ü \x00 \ue000',
    "request_id": None,
    "actor_tenant_id": "t",
    "actor_object_id": "o",
    "actor_cwid": "alice",
    "client_app_id": "c",
    "agent_id": "a",
    "room_name": "room",
    "registration_id": None,
    "client_ip": "203.0.113.7",
    "details": '{"k":"ü"}',
    "prev_hash": "ab" * 32,
}


def reference_hash(fields: dict[str, Any]) -> str:
    """The chain's hash as first defined: SHA-256 of the canonical JSON of every field."""
    payload = {
        name: value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if isinstance(value, datetime)
        else value
        for name, value in fields.items()
        if name != "hash"
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def test_record_hash_is_unchanged_for_stored_chains() -> None:
    # Computed before the hashed text was split; chains already stored must still verify.
    expected = "6a573becba6959e69ff4ee99e0264c6110bfb843c94a1854237606b5211a0aa0"
    assert record_hash(KNOWN_FIELDS) == expected == reference_hash(KNOWN_FIELDS)


_VALUES = st.one_of(st.none(), st.text(), st.sampled_from(['"prev_hash":""', '"seq":0', "\\"]))


@settings(max_examples=300, deadline=None)
@given(
    values=st.fixed_dictionaries({name: _VALUES for name in ("reason", "actor_cwid", "details")}),
    seq=st.integers(min_value=1, max_value=2**63 - 1),
    prev=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
)
def test_the_links_filled_into_the_hashed_text_give_the_record_hash(
    values: dict[str, Any], seq: int, prev: str
) -> None:
    fields = KNOWN_FIELDS | values | {"seq": seq, "prev_hash": prev}
    text = hashed_text(fields)
    assert text.hash(prev, seq) == reference_hash(fields) == record_hash(fields)
    # The parts do not depend on the links: a writer computes them before it has the head.
    assert hashed_text(fields | {"seq": 1, "prev_hash": GENESIS_HASH}) == text
