"""Whether LKPS can run on this store, asked once at start-up.

SQLite installs migrate themselves; elsewhere `lkps db upgrade` is an explicit step,
and LKPS refuses a store it cannot run on correctly rather than fail request by
request.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from lkps.config import ConfigurationError
from lkps.store.engine import READ_COMMITTED, is_sqlite, isolation_on, on_one_connection
from lkps.store.migrate import head_revision, revision_on, upgrade_async

log = logging.getLogger(__name__)


async def prepare_database(db_url: str) -> None:
    """Migrate SQLite; check PostgreSQL's schema revision and isolation, raising
    `ConfigurationError` with the fix when LKPS cannot run on it."""
    if is_sqlite(db_url):
        await upgrade_async(db_url)
        return

    async def ask(connection: AsyncConnection) -> tuple[str | None, str]:
        return await revision_on(connection), await isolation_on(connection)

    try:
        revision, isolation = await on_one_connection(db_url, ask)
    except Exception as exc:  # the store may come up later; readiness reports it
        log.warning("could not check the database at start-up", extra={"error": type(exc).__name__})
        return
    if revision != head_revision():
        raise ConfigurationError(
            f"database schema is at {revision or 'nothing'}, LKPS needs {head_revision()}: "
            "run `lkps db upgrade`"
        )
    if isolation != READ_COMMITTED:
        role = make_url(db_url).username or "<LKPS's role>"
        raise ConfigurationError(
            f"PostgreSQL runs LKPS's transactions at {isolation.upper()}; LKPS needs READ "
            "COMMITTED (concurrent audit writers fail otherwise). LKPS asks for it when it "
            "connects, and something in between dropped that (PgBouncer's "
            "ignore_startup_parameters): make it the role's default, "
            f"ALTER ROLE {role} SET default_transaction_isolation = 'read committed'"
        )
