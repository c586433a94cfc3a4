"""The hash chain: each record's hash covers its content and the previous hash.

Editing a record breaks its own hash; removing one breaks the link (and the sequence)
after it; removing the newest ones leaves the chain head pointing past the end.

The links are keyed: each hash is an HMAC-SHA256 under a key that is not in the
database (`ChainKey`, loaded by `lkps.audit.keys`), so that a database writer who
edits, removes or rewrites records cannot recompute a chain that verifies. Each record
is MACed under its own key, derived from the audit key and the record's id: PostgreSQL
computes the links (see `lkps.store.audit`) from that per-record key, never from the
audit key itself. Records chained before the chain was keyed (no `key_id`) keep their
plain SHA-256 links. Removing the newest records and rewinding the head leaves a valid
shorter chain, keyed or not: signed checkpoints (`lkps.audit.checkpoints`) catch that.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lkps.audit.records import RECORD_FIELDS, AuditRecord

GENESIS_HASH = "0" * 64

# Everything in a stored record but its own hash: derived, so that no field can be
# stored without being hashed.
HASHED_FIELDS = tuple(name for name in RECORD_FIELDS if name != "hash")


def canonical_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# Domain separation: an audit key serves for nothing but deriving record keys.
_RECORD_KEY_LABEL = b"lkps-audit-record\x00"
_BLOCK = 64  # SHA-256's block size, HMAC's pad length
_IPAD = int.from_bytes(b"\x36" * _BLOCK)
_OPAD = int.from_bytes(b"\x5c" * _BLOCK)


@dataclass(frozen=True, slots=True)
class ChainKey:
    """An audit key: the secret that keys the chain, and its public id (recorded in each
    record it chained, so that records verify across rotations)."""

    key_id: str
    secret: bytes = field(repr=False)

    def record_key(self, record_id: str) -> bytes:
        """The key one record's link is MACed with: HMAC-SHA256(audit key, label + id)."""
        message = _RECORD_KEY_LABEL + record_id.encode()
        return hmac.new(self.secret, message, hashlib.sha256).digest()


def hmac_pads(record_key: bytes) -> tuple[bytes, bytes]:
    """The inner and outer HMAC-SHA256 pads of a (32-byte) key: HMAC(k, m) is
    sha256(opad || sha256(ipad || m)), which PostgreSQL's core `sha256()` can compute
    without pgcrypto."""
    padded = int.from_bytes(record_key.ljust(_BLOCK, b"\x00"))
    return (padded ^ _IPAD).to_bytes(_BLOCK), (padded ^ _OPAD).to_bytes(_BLOCK)


@dataclass(frozen=True, slots=True)
class HashedText:
    """A record's hashed text around its two links, `prev_hash` and `seq`:
    `before_prev + prev_hash + before_seq + str(seq) + after_seq`.

    Everything but the links can be written before the chain head is known, so the
    writer that holds the head (PostgreSQL itself, on that engine) only fills them in.
    """

    before_prev: str
    before_seq: str
    after_seq: str

    def hash(self, prev_hash: str, seq: int, record_key: bytes | None = None) -> str:
        """The link: HMAC-SHA256 under `record_key`, or for a record chained before the
        chain was keyed, plain SHA-256."""
        text = f"{self.before_prev}{prev_hash}{self.before_seq}{seq}{self.after_seq}".encode()
        if record_key is None:
            return hashlib.sha256(text).hexdigest()
        return hmac.new(record_key, text, hashlib.sha256).hexdigest()


# The links as they appear in the canonical JSON with placeholder values. Inside a
# JSON string every quote is escaped, so these can only match the keys themselves.
_CONTENT_FIELDS = tuple(
    name for name in HASHED_FIELDS if name not in {"seq", "prev_hash", "key_id"}
)
_PREV_PLACEHOLDER = '"prev_hash":""'
_SEQ_PLACEHOLDER = '"seq":0'


def hashed_text(fields: Mapping[str, Any]) -> HashedText:
    """The hashed text of a record with these fields (`seq` and `prev_hash` unused).

    `key_id` is hashed when set; a record chained before keys existed has none, and its
    text (and so its hash) is what it was then."""
    payload = {
        name: canonical_time(fields[name]) if name == "occurred_at" else fields[name]
        for name in _CONTENT_FIELDS
    }
    if fields.get("key_id") is not None:
        payload["key_id"] = fields["key_id"]
    payload["prev_hash"] = ""
    payload["seq"] = 0
    # Keys are sorted: "prev_hash" comes before "seq".
    head, found_prev, rest = canonical_json(payload).partition(_PREV_PLACEHOLDER)
    middle, found_seq, tail = rest.partition(_SEQ_PLACEHOLDER)
    assert found_prev, "no prev_hash key in the canonical JSON"
    assert found_seq, "no seq key after prev_hash in the canonical JSON"
    return HashedText(f'{head}"prev_hash":"', f'"{middle}"seq":', tail)


def record_hash(fields: Mapping[str, Any], key: ChainKey | None = None) -> str:
    """The link of a record with these fields: keyed by `key`, whose id the fields
    must name (`key_id`), or unkeyed when both are None."""
    if (key.key_id if key else None) != fields.get("key_id"):
        raise ValueError("the record names another audit key than the one given")
    record_key = key.record_key(fields["record_id"]) if key else None
    return hashed_text(fields).hash(fields["prev_hash"], fields["seq"], record_key)


def hash_of(record: AuditRecord, key: ChainKey | None = None) -> str:
    return record_hash({name: getattr(record, name) for name in HASHED_FIELDS}, key)


@dataclass(frozen=True, slots=True)
class ChainVerification:
    ok: bool
    records_checked: int
    head_seq: int
    broken_at_seq: int | None = None
    problem: str | None = None
    # Keyed records whose content could not be checked (no audit key was given; their
    # links and any checkpoints still were).
    contents_unchecked: int = 0
    checkpoints_checked: int = 0
    newest_checkpoint: int = 0

    def describe(self) -> str:
        if not self.ok:
            return (
                f"audit chain broken at record {self.broken_at_seq}: {self.problem} "
                f"({self.records_checked} records checked)"
            )
        line = f"audit chain intact: {self.records_checked} records, head at {self.head_seq}"
        if self.checkpoints_checked:
            line += (
                f"; matches {self.checkpoints_checked} signed checkpoints, the newest at "
                f"record {self.newest_checkpoint}"
            )
        if self.contents_unchecked:
            line += (
                f"; contents of {self.contents_unchecked} keyed records not checked "
                "(their audit key was not given: links and checkpoints only)"
            )
        return line


async def verify_chain(
    records: AsyncIterable[AuditRecord],
    head_seq: int,
    head_hash: str,
    *,
    keys: Mapping[str, ChainKey] | None = None,
    legacy_until: int = 0,
    checkpoints: Mapping[int, str] | None = None,
) -> ChainVerification:
    """Walk the records in sequence order and report the first broken link.

    `keys` (by key id): the audit keys, current and previous; a record's keyed hash is
    checked with the key it names. `checkpoints`: sequence number to signed head hash
    (signatures already checked); each must match, and the records must reach the
    newest. A record up to the newest checkpoint is bound by it, so its content may go
    unchecked (counted) when its key is not given; so may any keyed record when no key
    is given at all (`keys` None: verifying with the public key alone). Otherwise a
    record naming a key not given fails, and with `keys` given every record after
    `legacy_until` that is neither keyed nor bound by a checkpoint fails: a writer
    could have re-chained it without a key.
    """
    expected_seq = 1
    previous = GENESIS_HASH
    checked = 0
    unchecked = 0
    signed = dict(checkpoints or {})
    newest = max(signed, default=0)
    matched = 0

    def broken(seq: int, problem: str) -> ChainVerification:
        return ChainVerification(False, checked, head_seq, seq, problem)

    async for record in records:
        if record.seq != expected_seq:
            return broken(expected_seq, f"record {expected_seq} is missing (next is {record.seq})")
        if record.prev_hash != previous:
            return broken(record.seq, "previous-hash link does not match the record before it")
        bound = record.seq <= newest
        if record.key_id is None:
            if keys is not None and record.seq > legacy_until and not bound:
                return broken(record.seq, "chained without an audit key (keyed chain expected)")
            if hash_of(record) != record.hash:
                return broken(record.seq, "content does not match its hash (edited)")
        elif keys is not None and record.key_id in keys:
            if hash_of(record, keys[record.key_id]) != record.hash:
                return broken(record.seq, "content does not match its keyed hash (edited)")
        elif bound or (keys is None and signed):
            unchecked += 1
        else:
            return broken(
                record.seq, f"chained with audit key {record.key_id}, which was not given"
            )
        if record.seq in signed:
            if signed[record.seq] != record.hash:
                return broken(record.seq, "hash differs from the signed checkpoint (rewritten)")
            matched += 1
        previous = record.hash
        expected_seq += 1
        checked += 1
    last_seq = expected_seq - 1
    if newest > last_seq:
        return broken(
            last_seq + 1,
            f"a signed checkpoint is at record {newest} but records end at {last_seq} (truncated)",
        )
    if last_seq != head_seq:
        return broken(last_seq + 1, f"chain head is at {head_seq} but records end at {last_seq}")
    if previous != head_hash:
        return broken(last_seq, "chain head hash does not match the last record")
    return ChainVerification(
        True,
        checked,
        head_seq,
        contents_unchecked=unchecked,
        checkpoints_checked=matched,
        newest_checkpoint=newest,
    )
