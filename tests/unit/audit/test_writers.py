"""The audit writer against a real store: several writers (replicas, processes) append to
one chain, each batch in one statement, and the chain stays whole.

Each writer locks the chain head for its batch, so batches never interleave: sequence
numbers stay consecutive and every record links to the one before it, whoever wrote it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from lkps.audit import AuditEntry, AuditEvent, AuditLog, AuditRecord, AuditUnavailable, Outcome
from lkps.audit.keys import AuditKeys, chain_key
from lkps.audit.log import SessionRowValues
from lkps.store import Database, StoreUnavailable
from lkps.store import audit as queries
from tests.backends import StoreSql, TestDatabase
from tests.unit.store.postgres_restart import terminate_backends

pytestmark = pytest.mark.e2e

# Writers chain under an audit key, as `lkps serve` always runs them (on PostgreSQL the
# HMACs are computed in the append statement).
KEYS = AuditKeys(chain_key(b"writers-test-audit-key-" * 2))


def entry(**fields: object) -> AuditEntry:
    values: dict[str, object] = {
        "event": AuditEvent.SESSION_START,
        "outcome": Outcome.GRANTED,
        "status": 200,
        "occurred_at": datetime.now(UTC),
        "record_id": str(uuid.uuid4()),
        "reason": "client pre-authorized (file)",
        "actor_cwid": "alice",
        "room_name": f"alice-{uuid.uuid4()}",
        "details": {"via": "start", "n": 1},
    }
    return AuditEntry(**(values | fields))  # type: ignore[arg-type]


async def append_all(db: Database, count: int, *, at_once: int = 8) -> list[AuditRecord]:
    """`count` records through one writer, `at_once` requests waiting at a time."""
    audit = AuditLog(db, keys=KEYS)
    await audit.start()
    records: list[AuditRecord] = []
    try:
        for start in range(0, count, at_once):
            group = range(start, min(count, start + at_once))
            records += await asyncio.gather(*(audit.append(entry()) for _ in group))
    finally:
        await audit.stop()
    return records


def append_in_another_process(url: str, count: int) -> list[str]:
    async def run() -> list[str]:
        db = Database.from_url(url, pool_size=2)
        try:
            return [record.record_id for record in await append_all(db, count)]
        finally:
            await db.dispose()

    return asyncio.run(run())


async def stored(db: Database) -> list[AuditRecord]:
    return [record async for record in AuditLog(db, keys=KEYS).records()]


@pytest.fixture
async def db(database: TestDatabase) -> AsyncIterator[Database]:
    db = Database.from_url(database.url, pool_size=4)
    yield db
    await db.dispose()


async def assert_one_chain(db: Database, record_ids: set[str]) -> None:
    verification = await AuditLog(db, keys=KEYS).verify()
    assert verification.ok, verification.describe()
    records = await stored(db)
    assert [r.seq for r in records] == list(range(1, len(record_ids) + 1))
    assert {r.record_id for r in records} == record_ids


async def test_writers_of_several_replicas_keep_one_chain(
    db: Database, database: TestDatabase
) -> None:
    replicas = [Database.from_url(database.url, pool_size=2) for _ in range(4)]
    try:
        written = await asyncio.gather(*(append_all(replica, 50) for replica in replicas))
    finally:
        for replica in replicas:
            await replica.dispose()
    ids = {record.record_id for records in written for record in records}
    assert len(ids) == 200
    await assert_one_chain(db, ids)


async def test_writers_in_several_processes_keep_one_chain(
    db: Database, database: TestDatabase
) -> None:
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=spawn) as pool:
        futures = [
            asyncio.wrap_future(pool.submit(append_in_another_process, database.url, 30))
            for _ in range(2)
        ]
        local = await append_all(db, 30)
        remote = await asyncio.gather(*futures)
    ids = {record.record_id for record in local} | {i for ids in remote for i in ids}
    assert len(ids) == 90
    await assert_one_chain(db, ids)


async def test_a_batch_stores_exactly_what_was_hashed(db: Database) -> None:
    """Every column through the batch statement, NUL and the store's escape included, and
    text that looks like the hashed text's own links (PostgreSQL fills them in)."""
    awkward = "x\x00y\ue000e\ue0000"
    links = '"prev_hash":"" "seq":0 \\" \u2028 \U0001f600 ü \x7f'
    audit = AuditLog(db, keys=KEYS)
    await audit.start()
    try:
        returned = await asyncio.gather(
            audit.append(entry(reason=awkward, details={awkward: awkward})),
            audit.append(entry(reason=links, actor_cwid=links, details={links: [links, 1.5]})),
            audit.append(entry(reason=None, actor_cwid=None, room_name=None, details={})),
            *(audit.append(entry(client_ip="203.0.113.7", request_id=f"r{i}")) for i in range(6)),
        )
    finally:
        await audit.stop()
    assert await stored(db) == sorted(returned, key=lambda record: record.seq)
    assert (await audit.verify()).ok


@pytest.mark.backends("postgresql")
async def test_an_over_long_value_is_refused_not_cut_short(
    db: Database, store_sql: StoreSql
) -> None:
    """PostgreSQL would silently cut a value cast to varchar(n); the column refuses it.
    (`AuditLog.append` bounds every value before it is queued, marking the cut, so this
    is the store's own guard beneath that: a value must never be stored other than
    hashed.)"""
    audit = AuditLog(db, keys=KEYS)
    with pytest.raises(StoreUnavailable) as refused:
        await audit._write([entry(room_name="r" * 513)])
    assert refused.value.refused_the_data
    assert await store_sql.scalar("SELECT count(*) FROM audit_records") == 0
    await audit.start()
    try:
        record = await audit.append(entry(room_name="r" * 513))
    finally:
        await audit.stop()
    assert record.room_name == "r" * 511 + "…"
    assert (await audit.verify()).ok


@pytest.mark.backends("postgresql")
async def test_a_batch_that_met_a_dead_connection_is_written_once(
    db: Database, database: TestDatabase
) -> None:
    first = await append_all(db, 8)
    assert terminate_backends(database) >= 1
    second = await append_all(db, 8)
    await assert_one_chain(db, {record.record_id for record in first + second})


async def test_the_writer_outlives_a_batch_that_failed_unexpectedly(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that fails in any way fails closed (503 for its requests); the writer goes
    on, instead of dying and leaving every later request waiting."""
    audit = AuditLog(db, keys=KEYS)
    original = AuditLog._write
    calls = 0

    async def fail_once(
        self: AuditLog, entries: list[AuditEntry], sessions: Sequence[SessionRowValues] = ()
    ) -> list[AuditRecord]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return await original(self, entries, sessions)

    monkeypatch.setattr(AuditLog, "_write", fail_once)
    await audit.start()
    try:
        with pytest.raises(AuditUnavailable):
            await asyncio.wait_for(audit.append(entry()), 5)
        record = await asyncio.wait_for(audit.append(entry()), 5)
    finally:
        await audit.stop()
    assert record.seq == 1
    await assert_one_chain(db, {record.record_id})


@pytest.mark.backends("postgresql")
async def test_a_hash_the_store_computed_differently_fails_the_batch(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL chains the batch itself; LKPS checks each hash it returns, so a store that
    hashed other bytes (an encoding conversion) is a 503 and an alarm at once, not a
    broken chain found at the next verification."""
    original = queries.append_chained

    async def other_bytes(*args: Any) -> list[tuple[int, str, str]]:
        return [(seq, prev, "0" * 64) for seq, prev, _ in await original(*args)]

    monkeypatch.setattr(queries, "append_chained", other_bytes)
    audit = AuditLog(db, keys=KEYS)
    await audit.start()
    try:
        with pytest.raises(AuditUnavailable):
            await audit.append(entry())
    finally:
        await audit.stop()
    assert "hashed audit record 1 differently" in caplog.text


@pytest.mark.backends("postgresql")
async def test_one_chain_where_the_database_defaults_to_serializable(
    database: TestDatabase, store_sql: StoreSql
) -> None:
    """The chain head relies on READ COMMITTED (a writer waiting for the head's lock
    reads the head its predecessor committed). A database whose operators made
    SERIALIZABLE the default would turn every such wait into a serialization failure,
    a 503; LKPS's sessions ask for READ COMMITTED whatever the default."""
    name = make_url(database.url).database
    await store_sql.execute(
        f"ALTER DATABASE {name} SET default_transaction_isolation TO 'serializable'"
    )
    replicas = [Database.from_url(database.url, pool_size=2) for _ in range(4)]
    try:
        written = await asyncio.gather(*(append_all(replica, 40) for replica in replicas))
    finally:
        for replica in replicas:
            await replica.dispose()
    assert await store_sql.scalar("SHOW default_transaction_isolation") == "serializable"
    db = Database.from_url(database.url, pool_size=1)
    try:
        await assert_one_chain(db, {record.record_id for records in written for record in records})
    finally:
        await db.dispose()
