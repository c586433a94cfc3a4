"""`/api/agents`: the agent list and per-agent authorization overrides."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.conftest import AGENT, AGENT_2, CLIENT_A, CLIENT_B, FakeClock, Lkps

pytestmark = pytest.mark.api


def admin(lkps: Lkps) -> str:
    return lkps.user_token("ops.admin", roles=["LKPS.Admin"])


def auditor(lkps: Lkps) -> str:
    return lkps.user_token("ops.auditor", roles=["LKPS.Auditor"])


async def get(lkps: Lkps, path: str, token: str) -> Any:
    return await lkps.http.get(path, headers={"Authorization": f"Bearer {token}"})


async def put_override(lkps: Lkps, token: str, agent: str = AGENT, **body: Any) -> Any:
    return await lkps.http.put(
        f"/api/agents/{agent}/authorization",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_agent_list_shows_presence_enforcement_and_workers(
    lkps: Lkps, clock: FakeClock
) -> None:
    first = (await lkps.register(AGENT, version="2.1.0")).json()["registration_id"]
    await lkps.register(AGENT, version="2.1.0")
    await lkps.register(AGENT_2, enforce_client_authz=False)
    clock.advance(30)
    await lkps.heartbeat(AGENT, registration_id=first)
    heartbeat_at = clock.now()
    clock.advance(70)  # AGENT_2 and AGENT's second worker have lapsed

    for token in (admin(lkps), auditor(lkps)):
        response = await get(lkps, "/api/agents", token)
        assert response.status_code == 200, response.text
        agents = {a["agent_id"]: a for a in response.json()["agents"]}
        assert agents[AGENT]["present"] is True
        assert agents[AGENT]["active_registrations"] == 1
        assert agents[AGENT]["version"] == "2.1.0"
        assert agents[AGENT]["enforce_client_authz"] is True
        assert datetime.fromisoformat(agents[AGENT]["last_heartbeat_at"]) == heartbeat_at
        assert agents[AGENT_2]["present"] is False
        assert agents[AGENT_2]["active_registrations"] == 0
        assert agents[AGENT_2]["enforce_client_authz"] is False


@pytest.mark.parametrize("who", ["user", "app", "wrong-role"])
async def test_agent_list_needs_admin_or_auditor(lkps: Lkps, who: str) -> None:
    token = {
        "user": lkps.user_token(),
        "app": lkps.app_token(CLIENT_A),
        "wrong-role": lkps.user_token(roles=["LKPS.Reader"]),
    }[who]
    response = await get(lkps, "/api/agents", token)
    assert response.status_code == 403
    assert "LKPS.Admin" in response.json()["message"]


async def test_override_allows_another_client_and_is_audited(lkps: Lkps) -> None:
    await lkps.register(AGENT, enforce_client_authz=True)
    bob = lkps.user_token("bob", client=CLIENT_B)
    assert (await lkps.start_session(AGENT, token=bob)).status_code == 403

    response = await put_override(lkps, admin(lkps), additional_clients=[CLIENT_B.upper()])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["additional_clients"] == [CLIENT_B]
    assert body["enforce_client_authz"] is None
    assert body["updated_by"].startswith("ops.admin (")

    granted = await lkps.start_session(AGENT, token=bob)
    assert granted.status_code == 200
    records = await lkps.audit_records()
    change = next(r for r in records if r.event == "admin.authz_override.set")
    assert change.actor_cwid == "ops.admin"
    assert change.agent_id == AGENT
    details = change.as_json()["details"]
    assert details["before"] is None
    assert details["after"]["additional_clients"] == [CLIENT_B]
    assert records[-1].reason == "client allowed by operator override"


async def test_override_switches_enforcement_both_ways(lkps: Lkps) -> None:
    await lkps.register(AGENT, enforce_client_authz=True)
    await lkps.register(AGENT_2, enforce_client_authz=False)
    bob = lkps.user_token("bob", client=CLIENT_B)
    await put_override(lkps, admin(lkps), AGENT, enforce_client_authz=False)
    await put_override(lkps, admin(lkps), AGENT_2, enforce_client_authz=True)
    assert (await lkps.start_session(AGENT, token=bob)).status_code == 200
    assert (await lkps.start_session(AGENT_2, token=bob)).status_code == 403
    agents = {
        a["agent_id"]: a for a in (await get(lkps, "/api/agents", admin(lkps))).json()["agents"]
    }
    assert agents[AGENT]["enforce_client_authz"] is False
    assert agents[AGENT]["registered_enforce_client_authz"] is True
    assert agents[AGENT]["override"]["enforce_client_authz"] is False


async def test_clearing_the_override_restores_the_agents_choice(lkps: Lkps) -> None:
    await lkps.register(AGENT, enforce_client_authz=True)
    bob = lkps.user_token("bob", client=CLIENT_B)
    await put_override(lkps, admin(lkps), enforce_client_authz=False)
    assert (await lkps.start_session(AGENT, token=bob)).status_code == 200
    cleared = await lkps.http.delete(
        f"/api/agents/{AGENT}/authorization", headers={"Authorization": f"Bearer {admin(lkps)}"}
    )
    assert cleared.status_code == 204
    assert (await lkps.start_session(AGENT, token=bob)).status_code == 403
    assert (await get(lkps, f"/api/agents/{AGENT}/authorization", admin(lkps))).status_code == 404
    record = next(r for r in await lkps.audit_records() if r.event == "admin.authz_override.clear")
    assert record.as_json()["details"]["before"]["enforce_client_authz"] is False


async def test_only_admins_change_overrides_and_refusals_are_audited(lkps: Lkps) -> None:
    for token in (auditor(lkps), lkps.user_token(), lkps.app_token(CLIENT_A)):
        response = await put_override(lkps, token, enforce_client_authz=False)
        assert response.status_code == 403
    denied = [r for r in await lkps.audit_records() if r.event == "admin.authz_override.set"]
    assert [r.outcome for r in denied] == ["denied"] * 3
    assert (await get(lkps, f"/api/agents/{AGENT}/authorization", auditor(lkps))).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"additional_clients": ["not-a-uuid"]},
        {"additional_clients": "one"},
        {"enforce_client_authz": "sometimes"},
        {"enforce_client_authz": "off"},
        {"enforce_client_authz": 1},
    ],
)
async def test_bad_override_bodies_are_400(lkps: Lkps, body: dict[str, Any]) -> None:
    response = await lkps.http.put(
        f"/api/agents/{AGENT}/authorization",
        json=body,
        headers={"Authorization": f"Bearer {admin(lkps)}"},
    )
    assert response.status_code == 400, response.text


async def test_agent_id_in_the_path_must_be_a_uuid(lkps: Lkps) -> None:
    response = await get(lkps, "/api/agents/not-an-id/authorization", admin(lkps))
    assert response.status_code == 400
    assert set(response.json()) == {"error", "message", "request_id"}
