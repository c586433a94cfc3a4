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

from lkps.audit.records import AuditRecord

GENESIS_HASH = "0" * 64

# Everything in a record but its own hash, in a fixed order.
HASHED_FIELDS = (
    "seq",
    "record_id",
    "occurred_at",
    "event",
    "outcome",
    "status",
    "reason",
    "request_id",
    "actor_tenant_id",
    "actor_object_id",
    "actor_cwid",
    "client_app_id",
    "agent_id",
    "room_name",
    "registration_id",
    "client_ip",
    "details",
    "prev_hash",
)


def canonical_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(fields: Mapping[str, Any]) -> str:
    payload = {
        name: canonical_time(fields[name]) if name == "occurred_at" else fields[name]
        for name in HASHED_FIELDS
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


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
