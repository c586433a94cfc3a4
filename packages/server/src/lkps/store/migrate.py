"""Alembic, driven from code so that `lkps db upgrade` needs no alembic.ini."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection

from lkps.store.engine import on_one_connection

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`. Blocking; call it from a thread inside a loop."""
    command.upgrade(alembic_config(database_url), revision)


async def current_revision(database_url: str) -> str | None:
    return await on_one_connection(database_url, revision_on)


async def revision_on(connection: AsyncConnection) -> str | None:
    return await connection.run_sync(_revision_of)


def _revision_of(connection: object) -> str | None:
    context = MigrationContext.configure(connection)  # type: ignore[arg-type]
    return context.get_current_revision()


async def upgrade_async(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)


async def run_migrations_on(connection: AsyncConnection) -> None:
    """Used by env.py: run the migration context on an async connection."""
    await connection.run_sync(_run_sync_migrations)


def _run_sync_migrations(connection: object) -> None:
    from alembic import context

    context.configure(connection=connection, target_metadata=None)  # type: ignore[arg-type]
    with context.begin_transaction():
        context.run_migrations()
