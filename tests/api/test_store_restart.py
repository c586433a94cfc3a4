"""PostgreSQL restarting under a running LKPS (all of its server connections ended at
once): requests caught in flight fail closed, with 503 and no token, and LKPS heals
without a restart of its own. LKPS has no pool pre-ping; these are what replaces it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.backends import StoreSql, TestDatabase
from tests.conftest import Lkps
from tests.unit.store.postgres_restart import terminate_backends

pytestmark = [pytest.mark.api, pytest.mark.backends("postgresql")]

TERMINATE = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


async def assert_fail_closed(lkps: Lkps, responses: list[httpx.Response]) -> None:
    """Each response is a success with its audit record, or a 503 without a token."""
    rooms = {r.room_name for r in await lkps.audit_records() if r.event == "session.start"}
    for response in responses:
        assert response.status_code in (200, 503), response.text
        if response.status_code == 200:
            assert response.json()["room_name"] in rooms
        else:
            assert "participant_token" not in response.json()


async def assert_healthy(lkps: Lkps) -> None:
    for i in range(10):
        response = await lkps.start_session(token=lkps.user_token(f"after{i}"))
        assert response.status_code == 200, response.text
    registered = await lkps.register(enforce_client_authz=False)
    assert registered.status_code == 200
    assert (await lkps.heartbeat()).status_code == 200
    assert (await lkps.http.get("/api/health/ready")).status_code == 200
    assert (await lkps.services.audit.verify()).ok


async def test_requests_in_flight_fail_closed_and_later_ones_succeed(
    lkps: Lkps, store_sql: StoreSql
) -> None:
    await lkps.register(enforce_client_authz=False)
    tokens = [lkps.user_token(f"user{i}") for i in range(40)]
    # Warm the pool: several connections, each known to the server.
    await asyncio.gather(*(lkps.start_session(token=token) for token in tokens[:10]))

    async def terminate() -> int:
        await asyncio.sleep(0.005)  # while the requests below are under way
        ended: int = await store_sql.scalar(TERMINATE)
        return ended

    starts = asyncio.gather(*(lkps.start_session(token=token) for token in tokens[10:]))
    ended, responses = await asyncio.gather(terminate(), starts)
    assert ended >= 1
    await assert_fail_closed(lkps, responses)
    await assert_healthy(lkps)


async def test_a_dead_pool_costs_at_most_the_next_request(
    lkps: Lkps, database: TestDatabase
) -> None:
    """Worst case: the server ended the connections and nothing in LKPS has noticed.

    A session start re-runs its presence read on a fresh connection; a registration (a
    transaction in the ORM) may fail once with 503; either way the pool is replaced and
    every later request succeeds."""
    await lkps.register(enforce_client_authz=False)
    await asyncio.gather(*(lkps.start_session(token=lkps.user_token(f"u{i}")) for i in range(5)))
    assert terminate_backends(database) >= 1
    assert (await lkps.start_session()).status_code == 200
    assert terminate_backends(database) >= 1
    first = await lkps.register(enforce_client_authz=False)
    assert first.status_code in (200, 503)
    if first.status_code == 503:
        assert "token" not in first.json()
    await assert_healthy(lkps)
