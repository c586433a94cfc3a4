"""The stores and services tests run against: SQLite files, PostgreSQL databases made
from a migrated template, and Redis key prefixes. The fixtures are in tests/conftest.py."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

Backend = Literal["sqlite", "postgresql"]
BACKENDS: tuple[Backend, ...] = ("sqlite", "postgresql")

POSTGRES_URL_VARIABLE = "LKPS_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://lkps:lkps@127.0.0.1:5432/postgres"
REDIS_URL_VARIABLE = "LKPS_TEST_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
REQUIRE_VARIABLE = "LKPS_TEST_REQUIRE_SERVICES"
DATABASE_PREFIX = "lkps_t_"

T = TypeVar("T")


def services_required() -> bool:
    return os.environ.get(REQUIRE_VARIABLE, "") not in ("", "0")


def service_missing(what: str, url: str, error: BaseException) -> None:
    """Skip the test (or, when CI requires the services, fail it) for a missing service."""
    message = f"{what} not reachable at {url}; run scripts/services ({type(error).__name__})"
    if services_required():
        pytest.fail(f"{message} [{REQUIRE_VARIABLE}=1]", pytrace=False)
    pytest.skip(message)


def unique_name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


@dataclass(frozen=True)
class TestDatabase:
    """A migrated LKPS store for one test: its SQLAlchemy URL and, for SQLite, its file."""

    __test__: ClassVar[bool] = False  # not a test class, whatever its name

    backend: Backend
    url: str
    path: Path | None = None


class PostgresServer:
    """A superuser connection to a PostgreSQL server, on a thread and event loop of its
    own so that synchronous fixtures can use it whatever loop a test runs in.

    Test databases are copies of a template migrated once per session. Each copy takes a
    checkpoint (~0.1 s), but concurrent copies share one; so a few spare copies are
    always being made while tests run, and dropping a database at teardown does not hold
    up the next test either.
    """

    SPARES = 3

    def __init__(self, admin_url: str) -> None:
        url = make_url(admin_url)
        self._url = url.set(drivername="postgresql+asyncpg")
        self.display_url = url.render_as_string(hide_password=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="lkps-test-postgres", daemon=True
        )
        self._thread.start()
        self._engine: AsyncEngine = create_async_engine(
            self._url,
            isolation_level="AUTOCOMMIT",
            pool_size=self.SPARES + 1,
            max_overflow=0,
            connect_args={"timeout": 5},
        )
        self._template: str | None = None
        self._spares: deque[Future[str]] = deque()
        self._pending: list[Future[None]] = []

    # Plumbing: coroutines run on the server's own loop.

    def _submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return self._submit(coroutine).result(timeout)

    async def _execute(self, *statements: str) -> None:
        async with self._engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))

    # The interface.

    def unreachable(self) -> Exception | None:
        """Why the server cannot be used (unreachable, credentials refused), if it cannot."""
        try:
            self._run(self._execute("SELECT 1"), timeout=30)
        except Exception as exc:
            return exc
        return None

    def url_of(self, database: str) -> str:
        return self._url.set(database=database).render_as_string(hide_password=False)

    def create_database(self) -> str:
        """An empty database of its own; drop it with `drop_database`."""
        return self._run(self._create(unique_name(DATABASE_PREFIX), None))

    async def _create(self, name: str, template: str | None) -> str:
        # FILE_COPY: for a database this small, copying files (and taking a checkpoint) is
        # cheaper than WAL-logging every page. A test database outlives no crash, so its
        # commits need not wait for the WAL flush that those checkpoints slow down.
        source = f'TEMPLATE "{template}" STRATEGY FILE_COPY' if template else "TEMPLATE template0"
        await self._execute(
            f'CREATE DATABASE "{name}" {source}',
            f'ALTER DATABASE "{name}" SET synchronous_commit = off',
        )
        return name

    def drop_database(self, name: str, *, wait: bool = True) -> None:
        future = self._submit(self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if wait:
            future.result(120)
        else:
            self._pending = [f for f in self._pending if not f.done()] + [future]

    def make_template(self, migrate: Callable[[str], None]) -> None:
        """Create the template test databases are copied from; `migrate(url)` fills it."""
        name = self.create_database()
        self._template = name
        migrate(self.url_of(name))

    def take_database(self) -> str:
        """A fresh copy of the template; more are made in the background."""
        assert self._template is not None, "make_template first"
        while len(self._spares) <= self.SPARES:
            name = unique_name(DATABASE_PREFIX)
            self._spares.append(self._submit(self._create(name, self._template)))
        return self._spares.popleft().result(120)

    def close(self) -> None:
        """Finish background work, drop the spare databases and the template, release
        the connections."""
        for future in self._pending:
            future.result(120)
        while self._spares:
            self.drop_database(self._spares.popleft().result(120))
        if self._template is not None:
            self.drop_database(self._template)
        self._run(self._engine.dispose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def postgres_admin_url() -> str:
    return os.environ.get(POSTGRES_URL_VARIABLE) or DEFAULT_POSTGRES_URL


class StoreSql:
    """Raw SQL on one test's store, whichever backend it is: what someone with direct
    access to the database (rather than through LKPS) could do.

    Each call runs in its own transaction on its own connection, so that LKPS, running
    in the same event loop, is never left waiting on a lock held here."""

    def __init__(self, database: TestDatabase) -> None:
        self.database = database
        self._engine = create_async_engine(database.url, poolclass=NullPool)

    @property
    def backend(self) -> Backend:
        return self.database.backend

    async def execute(self, *statements: str) -> None:
        """Run `statements` in one transaction. The database's refusal is a DBAPIError."""
        async with self._engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))

    async def scalar(self, query: str) -> Any:
        async with self._engine.connect() as connection:
            return (await connection.execute(text(query))).scalar_one()

    async def allow_audit_changes(self) -> None:
        """Remove the database's own refusal of UPDATE and DELETE on audit records."""
        if self.backend == "sqlite":
            await self.execute(
                "DROP TRIGGER audit_records_no_update", "DROP TRIGGER audit_records_no_delete"
            )
        else:
            await self.execute("DROP TRIGGER audit_records_append_only ON audit_records")

    async def refuse(self, name: str, operation: str, table: str, when: str) -> None:
        """Make the database refuse `operation` (INSERT, UPDATE, DELETE) on the rows of
        `table` that match `when` (a condition on NEW or OLD), as a constraint or an
        operator's trigger would: the statement fails and writes nothing. `name` names
        the trigger, for `allow`."""
        if self.backend == "sqlite":
            await self.execute(
                f"CREATE TRIGGER {name} BEFORE {operation} ON {table} FOR EACH ROW "
                f"WHEN {when} BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
            )
        else:
            await self.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN RAISE EXCEPTION '{REFUSAL}'; END $$",
                f"CREATE TRIGGER {name} BEFORE {operation} ON {table} FOR EACH ROW "
                f"WHEN ({when}) EXECUTE FUNCTION {name}()",
            )

    async def allow(self, name: str, table: str) -> None:
        """Drop the refusal `refuse` made under `name`."""
        if self.backend == "sqlite":
            await self.execute(f"DROP TRIGGER {name}")
        else:
            await self.execute(f"DROP TRIGGER {name} ON {table}", f"DROP FUNCTION {name}()")

    async def dispose(self) -> None:
        await self._engine.dispose()


# What `StoreSql.refuse`'s triggers answer.
REFUSAL = "refused by a test trigger"


# Refusals, as `StoreSql.execute` raises them.
StoreRefused = DBAPIError


@dataclass(frozen=True)
class RedisTarget:
    """A Redis database and the key prefix that is one test's alone."""

    url: str
    prefix: str

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=5, socket_timeout=10)

    def keys(self) -> list[bytes]:
        with self.client() as client:
            return list(client.scan_iter(match=f"{self.prefix}*", count=1000))

    def clear(self) -> int:
        """Delete every key under the prefix; how many there were."""
        keys = self.keys()
        if keys:
            with self.client() as client:
                client.delete(*keys)
        return len(keys)


def redis_unreachable(url: str) -> Exception | None:
    try:
        with RedisTarget(url, "").client() as client:
            client.ping()
    except Exception as exc:
        return exc
    return None


def redis_test_url() -> str:
    return os.environ.get(REDIS_URL_VARIABLE) or DEFAULT_REDIS_URL


def display_redis_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def iter_backends(marker_args: tuple[Any, ...] | None) -> Iterator[Backend]:
    for name in marker_args or BACKENDS:
        if name not in BACKENDS:
            raise ValueError(f"unknown store backend {name!r}; one of {BACKENDS}")
        yield name
