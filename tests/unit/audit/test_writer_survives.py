"""The audit writer outlives a batch that goes wrong in a way nobody foresaw: the batch's
requests fail closed (503) and the next batch is written, instead of the writer task
dying and leaving every later request refused or waiting."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest

from lkps.audit import AuditEntry, AuditEvent, AuditLog, AuditRecord, AuditUnavailable, Outcome
from lkps.audit.log import SessionRowValues
from lkps.store import Database
from tests.backends import TestDatabase

pytestmark = [pytest.mark.unit, pytest.mark.backends("sqlite")]


def entry() -> AuditEntry:
    return AuditEntry(
        event=AuditEvent.AGENT_EXPIRE,
        outcome=Outcome.RECORDED,
        status=0,
        occurred_at=datetime.now(UTC),
        record_id=str(uuid.uuid4()),
        reason="test",
    )


class ShortChangedOnce(AuditLog):
    """A store that, once, answers a batch with fewer records than it was given."""

    short_change = True

    async def _write(
        self, entries: list[AuditEntry], sessions: Sequence[SessionRowValues] = ()
    ) -> list[AuditRecord]:
        records = await super()._write(entries, sessions)
        if self.short_change:
            self.short_change = False
            return records[:-1]
        return records


@pytest.fixture
async def db(database: TestDatabase) -> AsyncIterator[Database]:
    db = Database.from_url(database.url)
    yield db
    await db.dispose()


async def test_writer_survives_a_batch_that_breaks_and_stops_cleanly(db: Database) -> None:
    audit = ShortChangedOnce(db)
    await audit.start()
    try:
        async with asyncio.timeout(30):  # a request left waiting is a failure, not a hang
            outcomes = await asyncio.gather(
                *(audit.append(entry()) for _ in range(3)), return_exceptions=True
            )
            assert any(isinstance(outcome, AuditUnavailable) for outcome in outcomes)
            assert audit.running
            record = await audit.append(entry())
        assert record.seq == 4
    finally:
        async with asyncio.timeout(30):
            await audit.stop()
    assert not audit.running
