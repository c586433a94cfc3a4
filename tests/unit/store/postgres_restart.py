"""What a PostgreSQL restart does to LKPS's pooled connections, without restarting the
server that other tests share: end every connection to one test database."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.backends import TestDatabase

# With a timeout, pg_terminate_backend waits until the backend has exited.
_TERMINATE = text(
    "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


async def _terminate(url: str) -> int:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(_TERMINATE)).scalar_one())
    finally:
        await engine.dispose()


def terminate_backends(database: TestDatabase) -> int:
    """End every other server connection to `database`, as a superuser; how many.

    It blocks, from another thread, while the caller's event loop stands still: no
    pooled connection has seen its end when the caller next uses it, unless the caller
    first lets the loop run (`await asyncio.sleep(...)`)."""
    ended: list[int] = []
    thread = threading.Thread(target=lambda: ended.append(asyncio.run(_terminate(database.url))))
    thread.start()
    thread.join(30)
    return ended[0]
