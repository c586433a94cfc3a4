"""`GET /api/audit` and `GET /api/audit/verify`, for the `LKPS.Auditor` role."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.backends import StoreSql
from tests.conftest import AGENT, AGENT_2, CLIENT_B, FakeClock, Lkps

pytestmark = pytest.mark.api


def auditor(lkps: Lkps) -> str:
    return lkps.user_token("ops.auditor", roles=["LKPS.Auditor"])


async def query(lkps: Lkps, token: str | None = None, **params: Any) -> Any:
    return await lkps.http.get(
        "/api/audit", params=params, headers={"Authorization": f"Bearer {token or auditor(lkps)}"}
    )


@pytest.fixture
async def trail(lkps: Lkps, clock: FakeClock) -> Lkps:
    """register AGENT, AGENT_2; alice x2 and bob (denied) on AGENT; carol on AGENT_2."""
    await lkps.register(AGENT)
    await lkps.register(AGENT_2, enforce_client_authz=False)
    clock.advance(40)
    await lkps.start_session(AGENT, token=lkps.user_token("alice"))
    await lkps.start_session(AGENT, token=lkps.user_token("alice"))
    await lkps.start_session(AGENT, token=lkps.user_token("bob", client=CLIENT_B))
    clock.advance(40)
    await lkps.start_session(AGENT_2, token=lkps.user_token("carol"))
    return lkps


@pytest.mark.parametrize(
    "token",
    [
        lambda lkps: lkps.user_token("alice"),
        lambda lkps: lkps.user_token("ops", roles=["LKPS.Admin"]),
        lambda lkps: lkps.app_token(CLIENT_B),
    ],
    ids=["plain-user", "admin-only", "app"],
)
async def test_without_the_auditor_role_nothing_is_shown(trail: Lkps, token: Any) -> None:
    for path in ("/api/audit", "/api/audit/verify"):
        response = await trail.http.get(path, headers={"Authorization": f"Bearer {token(trail)}"})
        assert response.status_code == 403
        assert "records" not in response.json()


async def test_newest_first_with_every_field(trail: Lkps) -> None:
    records = (await query(trail)).json()["records"]
    assert [r["seq"] for r in records] == [6, 5, 4, 3, 2, 1]
    assert records[0]["actor_cwid"] == "carol"
    assert records[0]["hash"] and records[0]["prev_hash"] == records[1]["hash"]


@pytest.mark.parametrize(
    ("params", "expected_seqs"),
    [
        ({"event": "agent.register"}, [2, 1]),
        ({"agent_id": AGENT}, [5, 4, 3, 1]),
        ({"client_app_id": CLIENT_B.upper()}, [5]),
        ({"cwid": "alice"}, [4, 3]),
        ({"outcome": "denied"}, [5]),
        ({"event": "session.start", "outcome": "granted", "agent_id": AGENT}, [4, 3]),
    ],
)
async def test_filters(trail: Lkps, params: dict[str, str], expected_seqs: list[int]) -> None:
    response = await query(trail, **params)
    assert response.status_code == 200, response.text
    assert [r["seq"] for r in response.json()["records"]] == expected_seqs


async def test_time_range(trail: Lkps, clock: FakeClock) -> None:
    end = clock.now()
    window = {"since": (end - timedelta(seconds=60)).isoformat(), "until": end.isoformat()}
    assert [r["seq"] for r in (await query(trail, **window)).json()["records"]] == [5, 4, 3]


async def test_cursor_pages_neither_skip_nor_repeat(trail: Lkps) -> None:
    seen: list[int] = []
    page = (await query(trail, limit=4)).json()
    seen += [r["seq"] for r in page["records"]]
    # New records arriving between pages must not disturb the walk back in time.
    await trail.start_session(AGENT, token=trail.user_token("dave"))
    while page["next_cursor"]:
        page = (await query(trail, limit=4, cursor=page["next_cursor"])).json()
        seen += [r["seq"] for r in page["records"]]
    assert seen == [6, 5, 4, 3, 2, 1]


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "not-a-cursor"},
        {"limit": 0},
        {"limit": 1001},
        {"since": "2026-11-23T12:00:00"},
        {"event": "no.such.event"},
        {"outcome": "maybe"},
        {"agent_id": "not-a-uuid"},
    ],
)
async def test_bad_query_parameters_are_400(trail: Lkps, params: dict[str, Any]) -> None:
    response = await query(trail, **params)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error", "message", "request_id"}


@pytest.mark.parametrize(
    "value",
    [
        "12345",  # pydantic alone would read a Unix timestamp
        "1763899200",
        "1763899200.5",
        "-1",
        "0",
        "2026-11-23T12:00:00",  # naive: whose noon?
        "2026-11-23T12:00:00.123456",
        "2026-11-23",
        "12:00:00Z",
        "yesterday",
        "2026-11-23T12:00:00Zgarbage",
        "2026-13-23T12:00:00Z",  # zoned, but no such month
        "2026-11-23T12:00:00+01",
        "garbage2026-11-23T12:00:00Z",
        "",
        " 2026-11-23T12:00:00Z",
    ],
)
@pytest.mark.parametrize("name", ["since", "until"])
async def test_since_and_until_need_iso_8601_with_a_time_zone(
    trail: Lkps, name: str, value: str
) -> None:
    response = await query(trail, **{name: value})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body == {
        "error": "bad_request",
        "message": f'"{name}" must be an ISO 8601 date and time with a time zone '
        "(e.g. 2026-11-23T12:00:00Z)",
        "request_id": response.headers["x-request-id"],
    }


@pytest.mark.parametrize(
    "value",
    [
        "2000-01-01T00:00:00Z",
        "2000-01-01T00:00:00z",
        "2000-01-01T00:00:00+00:00",
        "2000-01-01T01:00:00.123456+01:00",
        "1999-12-31T19:00:00-05:00",
        "2000-01-01T00:00Z",
        "2000-01-01 00:00:00Z",
        "2000-01-01T01:00:00+0100",
    ],
)
async def test_zoned_iso_8601_is_accepted(trail: Lkps, value: str) -> None:
    since = await query(trail, since=value)
    assert since.status_code == 200, since.text
    assert len(since.json()["records"]) == 6
    until = await query(trail, until=value)
    assert until.status_code == 200, until.text
    assert until.json()["records"] == []


async def test_verify_over_http(trail: Lkps, store_sql: StoreSql) -> None:
    headers = {"Authorization": f"Bearer {auditor(trail)}"}
    intact = (await trail.http.get("/api/audit/verify", headers=headers)).json()
    assert intact == {
        "ok": True,
        "records_checked": 6,
        "head_seq": 6,
        "broken_at_seq": None,
        "problem": None,
    }
    await store_sql.allow_audit_changes()
    await store_sql.execute("UPDATE audit_records SET outcome = 'granted' WHERE seq = 5")
    broken = (await trail.http.get("/api/audit/verify", headers=headers)).json()
    assert broken["ok"] is False
    assert broken["broken_at_seq"] == 5
