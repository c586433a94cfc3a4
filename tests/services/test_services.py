"""The backing services the suite relies on: these fail in CI (LKPS_TEST_REQUIRE_SERVICES=1)
when PostgreSQL or Redis is missing, instead of the tests that need them being skipped."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from lkps.store.migrate import current_revision, head_revision
from tests.backends import DATABASE_PREFIX, PostgresServer, RedisTarget, StoreSql, TestDatabase

pytestmark = pytest.mark.e2e

TABLES = {"agents", "agent_registrations", "audit_records", "audit_chain_head"}


def test_redis_prefix_is_the_tests_own_and_is_cleared(redis_url: RedisTarget) -> None:
    assert redis_url.prefix.startswith("lkps-test:")
    other = RedisTarget(redis_url.url, f"{redis_url.prefix}other-test:")
    assert not redis_url.keys(), "a fresh prefix holds no keys"
    with redis_url.client() as client:
        client.set(redis_url.key("a"), "1", ex=600)
        client.hset(redis_url.key("b"), mapping={"x": "y"})
        client.set("lkps-test-outsider", "kept", ex=600)
        assert client.get(redis_url.key("a")) == b"1"
        assert client.hgetall(redis_url.key("b")) == {b"x": b"y"}
    assert sorted(redis_url.keys()) == [redis_url.key("a").encode(), redis_url.key("b").encode()]
    assert not other.keys()
    # What the fixture does at teardown: everything under the prefix goes, nothing else.
    assert redis_url.clear() == 2
    assert redis_url.keys() == []
    with redis_url.client() as client:
        assert client.get("lkps-test-outsider") == b"kept"
        client.delete("lkps-test-outsider")


@pytest.mark.backends("postgresql")
async def test_postgresql_database_is_the_tests_own_and_migrated(
    database: TestDatabase, store_sql: StoreSql, postgres: PostgresServer
) -> None:
    assert database.backend == "postgresql"
    assert database.url.startswith("postgresql+asyncpg://")
    name = await store_sql.scalar("SELECT current_database()")
    assert name.startswith(DATABASE_PREFIX)
    assert await current_revision(database.url) == head_revision()
    engine = create_async_engine(database.url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    assert tables >= TABLES
    assert await store_sql.scalar("SELECT seq FROM audit_chain_head") == 0

    # Another test's database is a separate copy of the template: it sees none of this.
    await store_sql.execute("UPDATE audit_chain_head SET seq = 41")
    other = postgres.take_database()
    try:
        assert other != name
        other_sql = StoreSql(TestDatabase("postgresql", postgres.url_of(other)))
        try:
            assert await other_sql.scalar("SELECT seq FROM audit_chain_head") == 0
            assert await other_sql.scalar("SELECT count(*) FROM audit_records") == 0
        finally:
            await other_sql.dispose()
    finally:
        postgres.drop_database(other)
    assert await store_sql.scalar("SELECT seq FROM audit_chain_head") == 41
