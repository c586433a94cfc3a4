"""Alembic environment: online migrations on the async engine LKPS itself uses."""

from __future__ import annotations

import asyncio

from alembic import context

from lkps.store.engine import create_engine
from lkps.store.migrate import run_migrations_on


async def _run() -> None:
    engine = create_engine(context.config.attributes["database_url"])
    try:
        async with engine.connect() as connection:
            await run_migrations_on(connection)
            await connection.commit()
    finally:
        await engine.dispose()


asyncio.run(_run())
