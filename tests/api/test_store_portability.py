"""What SQLite accepts and PostgreSQL refuses (or the other way round) must not change
LKPS's answers: the same requests give the same results on both engines."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.backends import StoreSql
from tests.conftest import Lkps

pytestmark = pytest.mark.api

# NUL, which PostgreSQL text cannot hold, and the escape character the store uses for it.
AWKWARD = "2.1\x00-rc\ue000e\ue0000\\0"


def auditor(lkps: Lkps) -> dict[str, str]:
    return {"Authorization": f"Bearer {lkps.user_token('ops', roles=['LKPS.Auditor'])}"}


async def audit_seqs(lkps: Lkps, **params: Any) -> list[int]:
    response = await lkps.http.get("/api/audit", params=params, headers=auditor(lkps))
    assert response.status_code == 200, response.text
    return [record["seq"] for record in response.json()["records"]]


async def test_text_with_nul_is_stored_and_read_back_exactly(lkps: Lkps) -> None:
    response = await lkps.register(version=AWKWARD, enforce_client_authz=False)
    assert response.status_code == 200, response.text
    admin = lkps.user_token("ops", roles=["LKPS.Admin"])
    agents = await lkps.http.get("/api/agents", headers={"Authorization": f"Bearer {admin}"})
    assert [a["version"] for a in agents.json()["agents"]] == [AWKWARD]
    started = await lkps.start_session(metadata={"note": AWKWARD, AWKWARD: 1})
    assert started.status_code == 200, started.text
    assert (await lkps.services.audit.verify()).ok


@pytest.mark.parametrize("field", ["cwid", "client_app_id"])
async def test_filters_with_nul_match_nothing(lkps: Lkps, field: str) -> None:
    await lkps.register()
    assert await audit_seqs(lkps, **{field: "alice\x00"}) == []


async def test_a_cursor_beyond_any_sequence_number_starts_at_the_newest(lkps: Lkps) -> None:
    await lkps.register()
    await lkps.register()
    cursor = base64.urlsafe_b64encode(f"seq:{10**40}".encode()).decode().rstrip("=")
    assert await audit_seqs(lkps, cursor=cursor) == [2, 1]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"since": "0001-01-01T00:00:00+14:00"}, [1]),
        ({"until": "0001-01-01T00:00:00+14:00"}, []),
        ({"since": "9999-12-31T23:59:59-14:00"}, []),
        ({"until": "9999-12-31T23:59:59-14:00"}, [1]),
    ],
    ids=["since-before-year-1", "until-before-year-1", "since-after-9999", "until-after-9999"],
)
async def test_time_bounds_outside_what_utc_can_represent(
    lkps: Lkps, params: dict[str, str], expected: list[int]
) -> None:
    await lkps.register()
    assert await audit_seqs(lkps, **params) == expected


@pytest.mark.backends("postgresql")
async def test_severed_server_connections_are_replaced(lkps: Lkps, store_sql: StoreSql) -> None:
    """A database restart or failover ends LKPS's pooled connections; the next request
    gets a fresh one instead of an error."""
    await lkps.register(enforce_client_authz=False)
    ended = await store_sql.scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    assert ended >= 1
    assert (await lkps.start_session()).status_code == 200
    assert (await lkps.http.get("/api/health/ready")).status_code == 200
