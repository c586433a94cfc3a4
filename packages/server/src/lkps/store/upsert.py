"""INSERT ... ON CONFLICT DO UPDATE, on whichever engine the session runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase


def upsert_values(
    dialect: str, model: type[DeclarativeBase], rows: list[dict[str, Any]]
) -> postgresql.Insert | sqlite.Insert:
    """An INSERT of `rows` for `dialect`, to finish with `on_conflict_do_update` (its
    `excluded` names the values each row tried to insert)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(model).values(rows)


async def upsert(
    session: AsyncSession,
    model: type[DeclarativeBase],
    key: str,
    values: dict[str, Any],
    update: dict[str, Any],
) -> None:
    """Insert `values`, or apply `update` to the row whose `key` column matches."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(model).values(**values)
    await session.execute(statement.on_conflict_do_update(index_elements=[key], set_=update))
