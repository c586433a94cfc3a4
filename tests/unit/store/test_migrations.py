"""The Alembic migrations build exactly the schema the models describe, on both stores:
a model change without its migration (or the other way round) fails here, not in
production."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from lkps.store.models import Base
from tests.backends import TestDatabase

pytestmark = pytest.mark.unit


async def test_migrated_schema_matches_the_models(database: TestDatabase) -> None:
    engine = create_async_engine(database.url)
    try:
        async with engine.connect() as connection:

            def differences(sync_connection: Any) -> list[Any]:
                context = MigrationContext.configure(sync_connection)
                return list(compare_metadata(context, Base.metadata))

            diff = await connection.run_sync(differences)
    finally:
        await engine.dispose()
    assert diff == []
