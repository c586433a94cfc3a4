"""PostgreSQL going away under a running pool (a restart, a failover, an operator's
`pg_terminate_backend`): with no pre-ping, the pool must still heal by itself.

Two ways a pooled connection can be dead when LKPS next uses it:

- the server closed it while it sat idle and asyncpg has read that: the pool replaces
  it on checkout, at no cost to the request;
- the server closed it but the event loop has not run since, so nobody knows yet: the
  statement fails, SQLAlchemy invalidates the pool, and `Database.read()` and
  `Database.transaction()` run their work once more on a fresh connection;
- asyncpg has read the server's last error but not yet its close: the connection is
  still open, but its protocol is stuck, and is treated as dead in the same way.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from lkps.audit import AuditFilter, AuditLog
from lkps.store import Database, StoreUnavailable
from tests.backends import StoreSql, TestDatabase
from tests.unit.store.postgres_restart import terminate_backends

pytestmark = [pytest.mark.e2e, pytest.mark.backends("postgresql")]

RETRIED = "pooled connection was dead"


async def backend_pid(connection: AsyncConnection) -> int:
    return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


@pytest.fixture
async def db(database: TestDatabase) -> AsyncIterator[Database]:
    db = Database.from_url(database.url, pool_size=4)
    yield db
    await db.dispose()


def server_error(code: str, message: str) -> bytes:
    """A PostgreSQL ErrorResponse message, as the server sends it before closing."""
    fields = b"".join(
        kind + value.encode() + b"\0"
        for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


async def break_protocol(connection: AsyncConnection) -> int:
    """Feed the connection's asyncpg protocol what an administrator's termination
    sends first, and not the close that follows; its backend's pid."""
    pid = await backend_pid(connection)
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    driver._protocol.data_received(
        server_error("57P01", "terminating connection due to administrator command")
    )
    assert not driver.is_closed()
    return pid


async def fill_pool(db: Database, connections: int) -> set[int]:
    """Make the pool hold `connections` live connections; their backends' pids."""
    started = asyncio.Event()

    async def hold(connection: AsyncConnection) -> int:
        pid = await backend_pid(connection)
        await started.wait()
        return pid

    tasks = [asyncio.create_task(db.read(hold)) for _ in range(connections)]
    await asyncio.sleep(0.2)
    started.set()
    return set(await asyncio.gather(*tasks))


async def test_connections_closed_while_idle_are_replaced_on_checkout(
    db: Database, database: TestDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    before = await fill_pool(db, 4)
    assert len(before) == 4
    assert terminate_backends(database) >= 4
    await asyncio.sleep(0.05)  # asyncpg reads each connection's end
    with caplog.at_level(logging.INFO, logger="lkps.store.engine"):
        after = await fill_pool(db, 4)
    assert not after & before
    assert RETRIED not in caplog.text


async def test_a_read_on_a_connection_nobody_knows_is_dead_is_retried(
    db: Database, database: TestDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    before = await fill_pool(db, 3)
    assert terminate_backends(database) >= 3
    with caplog.at_level(logging.INFO, logger="lkps.store.engine"):
        pid = await db.read(backend_pid)
    assert pid not in before
    assert RETRIED in caplog.text
    # The failure invalidated the whole pool: the other dead connections are replaced on
    # checkout, without a failure or a retry of their own.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lkps.store.engine"):
        assert not await fill_pool(db, 3) & before
    assert RETRIED not in caplog.text


async def test_a_driver_read_on_a_connection_nobody_knows_is_dead_is_retried(
    db: Database, database: TestDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """`first_row` runs its statement on asyncpg itself (SQLAlchemy never sees it fail),
    so it drops the dead connection and tries once more on its own."""
    before = await fill_pool(db, 3)
    assert terminate_backends(database) >= 3
    with caplog.at_level(logging.INFO, logger="lkps.store.engine"):
        row = await db.first_row(select(func.pg_backend_pid()), {})
    assert row is not None and row[0] not in before
    assert RETRIED in caplog.text


async def test_a_driver_read_fails_closed_when_every_attempt_meets_a_dead_connection(
    db: Database, database: TestDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill_pool(db, 2)

    async def dead(*_: object) -> None:
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")

    monkeypatch.setattr(asyncpg.Connection, "fetchrow", dead)
    with pytest.raises(StoreUnavailable):
        await db.first_row(select(func.pg_backend_pid()), {})


@pytest.mark.parametrize("spins", range(6))
async def test_a_driver_read_just_after_the_server_ended_the_connection_is_retried(
    db: Database, database: TestDatabase, spins: int
) -> None:
    """Found in CI: a few event loop turns after `pg_terminate_backend`, asyncpg has read
    the server's error but not its close, and a statement met `InternalClientError`
    ("cannot switch to state 11"), which escaped as a 500."""
    before = await fill_pool(db, 4)
    assert terminate_backends(database) >= 4
    for _ in range(spins):
        await asyncio.sleep(0)
    row = await db.first_row(select(func.pg_backend_pid()), {})
    assert row is not None and row[0] not in before


@pytest.mark.parametrize("how", ["first_row", "read", "transaction", "statement"])
async def test_a_connection_whose_protocol_is_stuck_is_replaced(
    database: TestDatabase, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    db = Database.from_url(database.url, pool_size=1)
    try:
        stuck = await db.read(break_protocol)
        with caplog.at_level(logging.INFO, logger="lkps.store.engine"):
            if how == "first_row":
                row = await db.first_row(select(func.pg_backend_pid()), {})
                assert row is not None
                pid = row[0]
            else:
                pid = await getattr(db, how)(backend_pid)
        assert pid != stuck
        assert RETRIED in caplog.text
    finally:
        await db.dispose()


async def test_a_transaction_that_failed_on_a_dead_connection_is_retried_once(
    db: Database, database: TestDatabase, store_sql: StoreSql
) -> None:
    await store_sql.execute("CREATE TABLE probe (n integer)")
    await fill_pool(db, 2)
    terminate_backends(database)
    attempts = 0

    async def insert(connection: AsyncConnection) -> None:
        nonlocal attempts
        attempts += 1
        await connection.execute(text("INSERT INTO probe VALUES (1)"))
        await connection.execute(text("INSERT INTO probe VALUES (2)"))

    await db.transaction(insert)
    assert attempts == 2
    assert await store_sql.scalar("SELECT count(*) FROM probe") == 2


async def test_a_session_that_failed_on_a_dead_connection_is_retried_once(
    db: Database, database: TestDatabase, store_sql: StoreSql
) -> None:
    await store_sql.execute("CREATE TABLE probe (n integer)")
    await fill_pool(db, 2)
    terminate_backends(database)
    attempts = 0

    async def insert(session: AsyncSession) -> None:
        nonlocal attempts
        attempts += 1
        await session.execute(text("INSERT INTO probe VALUES (1)"))
        await session.execute(text("INSERT INTO probe VALUES (2)"))

    await db.run_in_session(insert)
    assert attempts == 2
    assert await store_sql.scalar("SELECT count(*) FROM probe") == 2


async def _all_records(audit: AuditLog) -> object:
    return [record async for record in audit.records()]


@pytest.mark.parametrize("read", ["records", "latest", "query", "verify"])
async def test_audit_reads_on_a_connection_nobody_knows_is_dead_are_retried(
    db: Database, database: TestDatabase, caplog: pytest.LogCaptureFixture, read: str
) -> None:
    """Found in CI: a test's own read of the trail, just after the server ended every
    connection, met a dead pooled connection and failed, where `read()` retries."""
    audit = AuditLog(db)
    reads: dict[str, Callable[[], Awaitable[object]]] = {
        "records": lambda: _all_records(audit),
        "latest": lambda: audit.latest(10),
        "query": lambda: audit.query(AuditFilter(), limit=10),
        "verify": audit.verify,
    }
    await fill_pool(db, 3)
    assert terminate_backends(database) >= 3
    with caplog.at_level(logging.INFO, logger="lkps.store.engine"):
        await reads[read]()
    assert RETRIED in caplog.text


async def test_an_unreachable_server_is_a_store_failure(database: TestDatabase) -> None:
    url = make_url(database.url).set(port=1).render_as_string(False)
    db = Database.from_url(url, timeout=2)
    try:
        with pytest.raises(StoreUnavailable):
            await db.read(backend_pid)
        with pytest.raises(StoreUnavailable):
            await db.transaction(backend_pid)
    finally:
        await db.dispose()


async def test_a_connection_whose_statement_timed_out_is_not_reused(
    database: TestDatabase,
) -> None:
    """What a server gone silent looks like from LKPS: a statement that never answers.
    SQLAlchemy drops such a connection (a pre-ping used to catch it on checkout)."""
    db = Database.from_url(database.url, timeout=0.5, pool_size=1)
    try:
        first = await db.read(backend_pid)

        async def stuck(connection: AsyncConnection) -> None:
            await connection.execute(text("SELECT pg_sleep(3)"))

        with pytest.raises(StoreUnavailable):
            await db.read(stuck)
        assert await db.read(backend_pid) != first
    finally:
        await db.dispose()
