"""The chain verifier finds edits, removals and a truncated tail."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lkps.audit.chain import (
    GENESIS_HASH,
    hash_of,
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
