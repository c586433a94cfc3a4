"""The database handle: engine, sessions, and the one place store failures become 503.

Every caller goes through `Database.session()`, `Database.run_in_session()`,
`Database.read()` or `Database.transaction()`, so a store that is down, locked or misconfigured surfaces as
`StoreUnavailable` (a 503 with Retry-After), never as a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import Select, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    SQLAlchemyError,
)
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
AnySelect = Select[*tuple[Any, ...]]

UNAVAILABLE_MESSAGE = "The service is temporarily unavailable; retry shortly"

# What every PostgreSQL connection asks for (see `create_engine`) and `lkps serve` checks
# it got (see `isolation_on`).
READ_COMMITTED = "read committed"


class StoreUnavailable(ServiceUnavailable):
    def __init__(self, reason: str) -> None:
        super().__init__(UNAVAILABLE_MESSAGE, reason=f"store unavailable: {reason}")

    @property
    def refused_the_data(self) -> bool:
        """The store answered, and refused what a statement held (a value too long for
        its column, a duplicate key): the statement wrote nothing, and the same
        statement without the offending data would succeed. Not the store being away."""
        cause = self.__cause__
        if isinstance(cause, IntegrityError | DataError):
            return True
        # SQLAlchemy's asyncpg adapter raises its generic DBAPIError for most server
        # errors; the SQLSTATE tells: class 22 is a data exception, 23 an integrity one.
        state = str(getattr(getattr(cause, "orig", None), "sqlstate", "") or "")
        return isinstance(cause, DBAPIError) and state[:2] in {"22", "23"}


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
        connect_args={
            "timeout": timeout,
            "command_timeout": timeout,
            # Whatever the server's default: the audit chain head (a writer waiting for
            # its lock reads what its predecessor committed) and the upserts rely on it.
            # A pooler may refuse this startup parameter or drop it; `lkps serve`
            # checks what it got (`isolation_on`).
            "server_settings": {"default_transaction_isolation": READ_COMMITTED},
        },
    )
    event.listen(engine.sync_engine, "checkout", _refuse_closed)
    return engine


async def on_one_connection(url: str, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """`work`'s result on a connection of its own, for the one-off questions a command or
    LKPS's start-up asks the store."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return await work(connection)
    finally:
        await engine.dispose()


async def isolation_on(connection: AsyncConnection) -> str:
    """The isolation PostgreSQL gives LKPS's transactions: READ COMMITTED, unless
    something between LKPS and the server dropped what `create_engine` asks for (a
    pooler such as PgBouncer with `ignore_startup_parameters`) and the role's or the
    database's default is another."""
    result = await connection.execute(text("SHOW default_transaction_isolation"))
    return str(result.scalar_one())


class DriverQuery:
    """A read-only Core statement compiled once for PostgreSQL, to run straight on the
    pooled connection's asyncpg driver.

    For the one read on every session start: SQLAlchemy's execution layer (a greenlet per
    statement, an execution context, result objects) cost ~100 µs of CPU around a query
    asyncpg runs in ~30. The statement is still written with SQLAlchemy, and values go
    through the columns' own types both ways (NUL escaping, UTC datetimes), exactly as
    `connection.execute` would convert them.
    """

    def __init__(self, statement: AnySelect, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self._names: Sequence[str] = compiled.positiontup or ()
        self._binds = [compiled.binds[name].type.bind_processor(dialect) for name in self._names]
        self._results = [
            column.type.result_processor(dialect, None) for column in statement.selected_columns
        ]

    def arguments(self, parameters: Mapping[str, Any]) -> list[Any]:
        return [
            value if convert is None else convert(value)
            for convert, value in zip(
                self._binds, (parameters[name] for name in self._names), strict=True
            )
        ]

    def row(self, record: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            value if convert is None else convert(value)
            for convert, value in zip(self._results, record, strict=True)
        )


# What says the connection under a statement is gone (closed, terminated by an
# administrator, a server shutting down), so another may succeed.
_CONNECTION_LOST = (
    asyncpg.InterfaceError,  # ConnectionDoesNotExistError among them
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    OSError,
)


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
        self._driver_queries: dict[AnySelect, DriverQuery] = {}

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 5.0, pool_size: int = 20) -> Database:
        return cls(create_engine(url, timeout=timeout, pool_size=pool_size), timeout=timeout)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self, within: AsyncSession | None = None) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed on success, rolled back on error; or,
        `within` a caller's session, that session, whose transaction the caller ends
        (a change that commits together with its audit record, see `AuditLog.change`)."""
        if within is not None:
            yield within
            return
        try:
            async with self._sessions() as session, session.begin():
                yield session
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise _unavailable(exc) from exc

    async def run_in_session(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`work`'s result, its session's transaction committed on success.

        Like `transaction()`, run again, once, when a statement of `work` met a dead
        pooled connection (nothing was committed on it); a failed COMMIT is not retried.
        `session()` cannot do this (a `with` block cannot run twice), so readers that
        must survive a restarted server, and changes recorded with their audit record,
        come through here.
        """
        return await self._run(lambda: self._in_session(work))

    async def _in_session(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async with self._sessions() as session:
            async with session.begin():
                result = await _dead_is_retryable(work(session))
            return result  # committed on leaving `begin()`; a failure there is not retried

    async def read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`work`'s result, on a pooled connection without a transaction of its own.

        For work that only reads, one statement (or statements that need not agree with
        each other): it is run again, once, when the connection turns out to be dead.
        """
        return await self._run(lambda: self._attempt(work, transaction=False))

    async def first_row(
        self, statement: AnySelect, parameters: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        """The first row of one read-only statement, without a transaction.

        Through `read()` either way (run again, once, on a dead connection); on
        PostgreSQL the statement runs on the pooled connection's asyncpg driver (see
        `DriverQuery`).
        """
        if self.dialect != "postgresql":
            return await self.read(lambda connection: _first(connection, statement, parameters))
        query = self._driver_queries.get(statement)
        if query is None:
            query = self._driver_queries[statement] = DriverQuery(statement, self.engine.dialect)
        return await self.read(lambda connection: _first_on_driver(connection, query, parameters))

    async def statement(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`work`'s result, where `work` is one statement that writes: atomic by itself.

        On PostgreSQL it runs in autocommit, so its locks last for the statement alone,
        never for a round trip back to LKPS. SQLite commits writes only in a
        transaction, so there it gets one. Run again, once, on a dead connection: give
        the statement something unique (a record id) if it must not apply twice, since
        a connection can die after the server committed.
        """
        sqlite = self.dialect == "sqlite"
        return await self._run(lambda: self._attempt(work, transaction=sqlite))

    async def transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`work`'s result, its statements committed together in one transaction.

        Run again, once, when a statement of `work` failed because the connection was
        dead: the server ends a dead connection's transaction without committing it. A
        failed COMMIT is not retried (it may have been applied): that is a 503.
        """
        return await self._run(lambda: self._attempt(work, transaction=True))

    async def _run(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()`, once more when it met a dead connection; store failures as 503."""
        try:
            try:
                return await attempt()
            except _DeadConnection:
                log.info("pooled connection was dead; retrying on a fresh one")
                return await attempt()
        except _DeadConnection as exc:
            raise _unavailable(exc.__cause__ or exc) from exc
        except (SQLAlchemyError, asyncpg.PostgresError, OSError, TimeoutError) as exc:
            # asyncpg's own errors come only from statements run on the driver itself.
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


async def _first(
    connection: AsyncConnection, statement: AnySelect, parameters: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    row = (await connection.execute(statement, dict(parameters))).first()
    return None if row is None else tuple(row)


async def _first_on_driver(
    connection: AsyncConnection, query: DriverQuery, parameters: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    try:
        record = await driver.fetchrow(query.sql, *query.arguments(parameters))
    except Exception as exc:
        # SQLAlchemy's rule, which it cannot apply to a statement it did not run: a
        # failure that left the connection closed met a dead connection. asyncpg closes
        # it itself when the server's last error left its protocol stuck (the server
        # ended the connection and asyncpg read the error, not yet the close).
        dead = isinstance(exc, _CONNECTION_LOST) or driver.is_closed()
        if not (dead or isinstance(exc, TimeoutError)):
            raise
        # Drop this connection (a timed-out one too: its state is unknown) and, when it
        # was dead, let `Database.read()` try once more.
        await connection.invalidate()
        if not dead:
            raise
        raise _DeadConnection from exc
    return None if record is None else query.row(record)


async def _dead_is_retryable(work: Awaitable[T]) -> T:
    try:
        return await work
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise _DeadConnection from exc
        raise
