"""The database handle: engine, sessions, and the one place store failures become 503.

Every caller goes through `Database.session()`, so a store that is down, locked or
misconfigured surfaces as `StoreUnavailable` (a 503 with Retry-After), never as a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from lkps.errors import ServiceUnavailable

log = logging.getLogger(__name__)

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
    # more than the query).
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=timeout,
        pool_pre_ping=True,
        connect_args={"timeout": timeout, "command_timeout": timeout},
    )


class Database:
    def __init__(self, engine: AsyncEngine, *, timeout: float = 5.0) -> None:
        self.engine = engine
        self._timeout = timeout
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

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
            log.warning("store operation failed", extra={"error": type(exc).__name__})
            raise StoreUnavailable(type(exc).__name__) from exc

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout), self.session() as session:
                await session.execute(text("SELECT 1"))
        except (StoreUnavailable, TimeoutError):
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()
