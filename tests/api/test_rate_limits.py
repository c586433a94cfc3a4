"""Rate limits on session start (per client app, per user) and registration (per agent)."""

from __future__ import annotations

from typing import Any

import pytest

from lkps_testkit import EntraDouble
from tests.api.util import running_lkps
from tests.conftest import AGENT, AGENT_2, CLIENT_A, CLIENT_B, FakeClock, Lkps

pytestmark = pytest.mark.api


@pytest.fixture
def limited(settings_values: dict[str, Any]) -> dict[str, Any]:
    return {
        **settings_values,
        "default_enforce_client_authz": False,
        "rate_limit_window_seconds": 60,
        "rate_limit_session_per_client": 5,
        "rate_limit_session_per_user": 3,
        "rate_limit_register_per_agent": 2,
    }


async def test_a_user_over_the_limit_gets_429_with_retry_after(
    limited: dict[str, Any], clock: FakeClock, entra: EntraDouble
) -> None:
    async with running_lkps(limited, clock, entra) as lkps:
        await lkps.register(AGENT)
        alice = lkps.user_token("alice")
        assert [(await lkps.start_session(token=alice)).status_code for _ in range(3)] == [200] * 3
        refused = await lkps.start_session(token=alice)
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert int(refused.headers["retry-after"]) == 20  # one token per 60/3 s
        assert (await lkps.start_session(token=lkps.user_token("bob"))).status_code == 200
        record = (await lkps.audit_records())[-2]
        assert (record.status, record.outcome, record.reason) == (
            429,
            "denied",
            "rate limit session_per_user exceeded",
        )
        clock.advance(20)  # the bucket refills
        assert (await lkps.start_session(token=alice)).status_code == 200


async def test_a_client_app_over_the_limit_gets_429(
    limited: dict[str, Any], clock: FakeClock, entra: EntraDouble
) -> None:
    async with running_lkps(limited, clock, entra) as lkps:
        await lkps.register(AGENT)
        statuses = [
            (
                await lkps.start_session(token=lkps.user_token(f"user{i}", client=CLIENT_A))
            ).status_code
            for i in range(6)
        ]
        assert statuses == [200] * 5 + [429]
        other_client = lkps.user_token("user0", client=CLIENT_B)
        assert (await lkps.start_session(token=other_client)).status_code == 200


async def test_backends_are_limited_per_client_only(
    limited: dict[str, Any], clock: FakeClock, entra: EntraDouble
) -> None:
    async with running_lkps(limited, clock, entra) as lkps:
        await lkps.register(AGENT)
        backend = lkps.app_token(CLIENT_B)
        statuses = [(await lkps.start_session(token=backend)).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]  # not cut at the per-user 3


async def test_registrations_are_limited_per_agent(
    limited: dict[str, Any], clock: FakeClock, entra: EntraDouble
) -> None:
    async with running_lkps(limited, clock, entra) as lkps:
        assert [(await lkps.register(AGENT)).status_code for _ in range(3)] == [200, 200, 429]
        assert (await lkps.register(AGENT_2)).status_code == 200
        record = (await lkps.audit_records())[-2]
        assert (record.event, record.status) == ("agent.register", 429)


async def test_zero_means_no_limit(
    settings_values: dict[str, Any], clock: FakeClock, entra: EntraDouble
) -> None:
    settings = {**settings_values, "rate_limit_session_per_user": 0}
    async with running_lkps(settings, clock, entra) as unlimited:
        await unlimited.register(AGENT, enforce_client_authz=False)
        alice = unlimited.user_token("alice")
        statuses = {(await unlimited.start_session(token=alice)).status_code for _ in range(70)}
        assert statuses == {200}


async def test_openapi_documents_429(lkps: Lkps) -> None:
    spec = (await lkps.http.get("/api/openapi.json")).json()
    for path in ("/api/session/start", "/api/session/token", "/api/agent/register"):
        assert "429" in spec["paths"][path]["post"]["responses"]
