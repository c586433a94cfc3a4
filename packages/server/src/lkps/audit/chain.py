"""The hash chain: each record's hash covers its content and the previous hash.

Editing a record breaks its own hash; removing one breaks the link (and the sequence)
after it; removing the newest ones leaves the chain head pointing past the end.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
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

    def hash(self, prev_hash: str, seq: int) -> str:
        text = f"{self.before_prev}{prev_hash}{self.before_seq}{seq}{self.after_seq}"
        return hashlib.sha256(text.encode()).hexdigest()


# The links as they appear in the canonical JSON with placeholder values. Inside a
# JSON string every quote is escaped, so these can only match the keys themselves.
_CONTENT_FIELDS = tuple(name for name in HASHED_FIELDS if name not in {"seq", "prev_hash"})
_PREV_PLACEHOLDER = '"prev_hash":""'
_SEQ_PLACEHOLDER = '"seq":0'


def hashed_text(fields: Mapping[str, Any]) -> HashedText:
    """The hashed text of a record with these fields (`seq` and `prev_hash` unused)."""
    payload = {
        name: canonical_time(fields[name]) if name == "occurred_at" else fields[name]
        for name in _CONTENT_FIELDS
    }
    payload["prev_hash"] = ""
    payload["seq"] = 0
    # Keys are sorted: "prev_hash" comes before "seq".
    head, found_prev, rest = canonical_json(payload).partition(_PREV_PLACEHOLDER)
    middle, found_seq, tail = rest.partition(_SEQ_PLACEHOLDER)
    assert found_prev, "no prev_hash key in the canonical JSON"
    assert found_seq, "no seq key after prev_hash in the canonical JSON"
    return HashedText(f'{head}"prev_hash":"', f'"{middle}"seq":', tail)


def record_hash(fields: Mapping[str, Any]) -> str:
    return hashed_text(fields).hash(fields["prev_hash"], fields["seq"])


def hash_of(record: AuditRecord) -> str:
    return record_hash({name: getattr(record, name) for name in HASHED_FIELDS})


@dataclass(frozen=True, slots=True)
class ChainVerification:
    ok: bool
    records_checked: int
    head_seq: int
    broken_at_seq: int | None = None
    problem: str | None = None

    def describe(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.records_checked} records, head at {self.head_seq}"
        return (
            f"audit chain broken at record {self.broken_at_seq}: {self.problem} "
            f"({self.records_checked} records checked)"
        )


async def verify_chain(
    records: AsyncIterable[AuditRecord], head_seq: int, head_hash: str
) -> ChainVerification:
    """Walk the records in sequence order and report the first broken link."""
    expected_seq = 1
    previous = GENESIS_HASH
    checked = 0

    def broken(seq: int, problem: str) -> ChainVerification:
        return ChainVerification(False, checked, head_seq, seq, problem)

    async for record in records:
        if record.seq != expected_seq:
            return broken(expected_seq, f"record {expected_seq} is missing (next is {record.seq})")
        if record.prev_hash != previous:
            return broken(record.seq, "previous-hash link does not match the record before it")
        if hash_of(record) != record.hash:
            return broken(record.seq, "content does not match its hash (edited)")
        previous = record.hash
        expected_seq += 1
        checked += 1
    last_seq = expected_seq - 1
    if last_seq != head_seq:
        return broken(last_seq + 1, f"chain head is at {head_seq} but records end at {last_seq}")
    if previous != head_hash:
        return broken(last_seq, "chain head hash does not match the last record")
    return ChainVerification(True, checked, head_seq)
