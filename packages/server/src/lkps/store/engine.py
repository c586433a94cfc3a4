"""The database handle: engine, sessions, and the one place store failures become 503.

Every caller goes through `Database.session()`, `Database.read()` or
`Database.transaction()`, so a store that is down, locked or misconfigured surfaces as
`StoreUnavailable` (a 503 with Retry-After), never as a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from lkps.errors import ServiceUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

UNAVAILABLE_MESSAGE = "The service is temporarily unavailable; retry shortly"


class StoreUnavailable(ServiceUnavailable):
    def __init__(self, reason: str) -> None:
        super().__init__(UNAVAILABLE_MESSAGE, reason=f"store unavailable: {reason}")


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_directory(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (the audit CLI, readiness) run beside the writer; FULL makes a
    # commit durable before LKPS answers, which the audit promise depends on.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _refuse_closed(_dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
    """Instead of a pre-ping (three round trips with asyncpg: BEGIN, `;`, ROLLBACK, on
    every checkout), ask asyncpg whether the server already closed this connection.

    A restarting server, a failover or `pg_terminate_backend` closes idle connections
    with a message, which asyncpg reads as soon as the event loop runs; the pool then
    replaces each such connection on checkout, for free. A connection that dies while
    in use, or before asyncpg noticed, fails its statement instead: SQLAlchemy then
    invalidates it and every older pooled connection, and `Database.read()` and
    `Database.transaction()` try once more on a fresh one. A server gone silent (no
    close at all) shows as a statement timeout, after which SQLAlchemy drops that
    connection too (it treats a timeout like a cancellation).
    """
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def create_engine(url: str, *, timeout: float = 5.0, pool_size: int = 20) -> AsyncEngine:
    if is_sqlite(url):
        ensure_sqlite_directory(url)
        # WAL lets reads run beside the one writer. Every write transaction here starts
        # with a write statement, so writers queue on SQLite's lock (busy_timeout)
        # instead of failing to upgrade a read snapshot.
        engine = create_async_engine(url, pool_size=4, max_overflow=0, pool_timeout=timeout)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # A fixed pool: under load, requests wait for a free connection instead of opening
    # and closing overflow connections (PostgreSQL's per-connection start-up and auth cost
    # more than the query). No pre-ping: see `_refuse_closed`.
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=timeout,
        connect_args={"timeout": timeout, "command_timeout": timeout},
    )
    event.listen(engine.sync_engine, "checkout", _refuse_closed)
    return engine


class _DeadConnection(Exception):
    """The pooled connection was dead before anything could be committed on it."""


def _unavailable(exc: BaseException) -> StoreUnavailable:
    log.warning("store operation failed", extra={"error": type(exc).__name__})
    return StoreUnavailable(type(exc).__name__)


class Database:
    def __init__(self, engine: AsyncEngine, *, timeout: float = 5.0) -> None:
        self.engine = engine
        self._timeout = timeout
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # Reads of one statement need no transaction: on PostgreSQL, autocommit saves
        # the BEGIN and COMMIT round trips and still sees everything committed before
        # the statement began. SQLite's driver only opens a transaction before a write,
        # so a plain connection already reads in autocommit there (and switching its
        # isolation level would cost a PRAGMA on every checkout).
        self._reads = (
            engine
            if engine.dialect.name == "sqlite"
            else engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 5.0, pool_size: int = 20) -> Database:
        return cls(create_engine(url, timeout=timeout, pool_size=pool_size), timeout=timeout)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed on success, rolled back on error."""
        try:
            async with self._sessions() as session, session.begin():
                yield session
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise _unavailable(exc) from exc

    async def read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`work`'s result, on a pooled connection without a transaction of its own.

        For work that only reads, one statement (or statements that need not agree with
        each other): it is run again, once, when the connection turns out to be dead.
        """
        return await self._run(work, transaction=False)

    async def statement(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`work`'s result, where `work` is one statement that writes: atomic by itself.

        On PostgreSQL it runs in autocommit, so its locks last for the statement alone,
        never for a round trip back to LKPS. SQLite commits writes only in a
        transaction, so there it gets one. Run again, once, on a dead connection: give
        the statement something unique (a record id) if it must not apply twice, since
        a connection can die after the server committed.
        """
        return await self._run(work, transaction=self.dialect == "sqlite")

    async def transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`work`'s result, its statements committed together in one transaction.

        Run again, once, when a statement of `work` failed because the connection was
        dead: the server ends a dead connection's transaction without committing it. A
        failed COMMIT is not retried (it may have been applied): that is a 503.
        """
        return await self._run(work, transaction=True)

    async def _run(
        self, work: Callable[[AsyncConnection], Awaitable[T]], *, transaction: bool
    ) -> T:
        try:
            try:
                return await self._attempt(work, transaction=transaction)
            except _DeadConnection:
                log.info("pooled connection was dead; retrying on a fresh one")
                return await self._attempt(work, transaction=transaction)
        except _DeadConnection as exc:
            raise _unavailable(exc.__cause__ or exc) from exc
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise _unavailable(exc) from exc

    async def _attempt(
        self, work: Callable[[AsyncConnection], Awaitable[T]], *, transaction: bool
    ) -> T:
        async with (self.engine if transaction else self._reads).connect() as connection:
            if not transaction:
                return await _dead_is_retryable(work(connection))
            async with connection.begin():
                result = await _dead_is_retryable(work(connection))
            return result  # committed on leaving `begin()`; a failure there is not retried

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout), self.session() as session:
                await session.execute(text("SELECT 1"))
        except (StoreUnavailable, TimeoutError):
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()


async def _dead_is_retryable(work: Awaitable[T]) -> T:
    try:
        return await work
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise _DeadConnection from exc
        raise
