"""Persistence: the only package that speaks SQL.

SQLite (the embedded default) and PostgreSQL (production, through asyncpg) run the same
models and the same Alembic migrations.
"""

from lkps.store.engine import Database, StoreUnavailable

__all__ = ["Database", "StoreUnavailable"]
