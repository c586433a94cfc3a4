"""One record's problem fails its own request only, never the others in its batch.

Reported: one request whose forwarded address was 65 characters long (the column holds
64) failed the whole group-commit batch on PostgreSQL, and 113 other users' session
starts with it. Every text field is now bounded before it is queued, and a batch the
store refuses for its data is written again record by record.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from lkps.audit import AuditLog, AuditUnavailable
from lkps.audit.log import REASON_LIMIT, bound
from lkps.store import Database
from tests.backends import TestDatabase
from tests.unit.audit.test_writers import entry, stored

pytestmark = pytest.mark.e2e


@pytest.fixture
async def audit(database: TestDatabase) -> AsyncIterator[AuditLog]:
    db = Database.from_url(database.url, pool_size=2)
    log = AuditLog(db)
    await log.start()
    yield log
    await log.stop()
    await db.dispose()


def test_every_text_field_is_cut_to_what_the_store_keeps_and_marked() -> None:
    record = entry(client_ip="1" * 65, reason="alg " + "A" * 12_000, actor_cwid="c" * 300)
    bound(record)
    assert record.client_ip is not None and len(record.client_ip) == 64
    assert record.client_ip.endswith("…")
    assert record.reason is not None and len(record.reason) == REASON_LIMIT
    assert record.actor_cwid is not None and len(record.actor_cwid) == 256
    short = entry(client_ip="203.0.113.7")
    bound(short)
    assert short.client_ip == "203.0.113.7"


async def test_over_long_values_are_stored_bounded_with_the_rest_of_the_batch(
    audit: AuditLog, database: TestDatabase
) -> None:
    batch = [entry() for _ in range(20)]
    batch[7].client_ip = "x" * 65
    batch[8].reason = "y" * 12_000
    records = await asyncio.gather(*(audit.append(one) for one in batch))
    assert [r.seq for r in records] == list(range(1, 21))
    assert records[7].client_ip == "x" * 63 + "…"
    assert (await audit.verify()).ok


async def test_a_record_the_store_refuses_fails_alone(audit: AuditLog) -> None:
    first = await audit.append(entry())
    # A record id the trail already holds: the store refuses it (unique), as it would
    # any value it cannot take. It shares its batch with 15 good records.
    batch = [entry() for _ in range(16)]
    batch[5].record_id = first.record_id
    outcomes = await asyncio.gather(*(audit.append(one) for one in batch), return_exceptions=True)
    refused = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, Exception)]
    assert refused == [5]
    assert isinstance(outcomes[5], AuditUnavailable)
    assert (await audit.verify()).ok
    assert len(await stored(audit._db)) == 16  # the first and the 15 good ones
