"""Agent registration, heartbeat, deregistration, and presence."""

from __future__ import annotations

import uuid
from typing import Any

import jwt
import pytest
from livekit.api import TokenVerifier

from tests.api.util import running_lkps
from tests.conftest import AGENT, AGENT_2, CLIENT_A, LIVEKIT_KEY, LIVEKIT_URL, FakeClock, Lkps

pytestmark = pytest.mark.api


async def test_register_returns_the_contract_fields(lkps: Lkps) -> None:
    response = await lkps.register(version="1.4.2", metadata={"team": "voice"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["agent_name"] == AGENT
    assert body["livekit_url"] == LIVEKIT_URL
    assert body["heartbeat_interval_seconds"] == 30
    assert body["presence_ttl_seconds"] == 90
    uuid.UUID(body["registration_id"])
    assert body["expires_at"]


async def test_agent_token_carries_only_the_agent_grant(
    lkps: Lkps, livekit_verifier: TokenVerifier
) -> None:
    token = (await lkps.register()).json()["token"]
    claims = livekit_verifier.verify(token)
    assert claims.video is not None and claims.video.agent is True
    for grant in ("room_join", "room_create", "room_admin", "room_list", "room_record"):
        assert not getattr(claims.video, grant), grant
    assert not claims.video.room
    raw: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    granted = {name for name, value in raw["video"].items() if value}
    assert granted == {"agent"}
    assert raw["iss"] == LIVEKIT_KEY
    assert raw["exp"] - raw["nbf"] == 3600
    assert "roomConfig" not in raw


async def test_agent_id_comes_from_the_token_never_the_body(lkps: Lkps) -> None:
    response = await lkps.register(AGENT, agent_name=AGENT_2, agent_entra_app_id=AGENT_2)
    assert response.json()["agent_name"] == AGENT
    assert (await lkps.start_session(AGENT_2)).status_code == 404


async def test_v1_app_token_registers(lkps: Lkps) -> None:
    response = await lkps.register(token=lkps.app_token(AGENT, version="1.0"))
    assert response.status_code == 200
    assert response.json()["agent_name"] == AGENT


async def test_agent_role_is_required_when_configured(
    settings_values: dict[str, Any], clock: FakeClock, entra: Any
) -> None:
    settings_values["agent_role"] = "LKPS.Agent"
    async with running_lkps(settings_values, clock, entra) as lkps:
        refused = await lkps.register()
        assert refused.status_code == 403
        assert "LKPS.Agent" in refused.json()["message"]
        allowed = await lkps.register(token=lkps.app_token(AGENT, roles=["LKPS.Agent"]))
        assert allowed.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"enforce_client_authz": "maybe"},
        # Strict booleans: nothing else is read as one (fuzzing finding F1).
        {"enforce_client_authz": "true"},
        {"enforce_client_authz": "yes"},
        {"enforce_client_authz": 0},
        {"enforce_client_authz": 1.0},
        {"version": "v" * 129},
        {"metadata": "not an object"},
        {"metadata": {f"k{i}": i for i in range(51)}},
        {"registration_id": "not-a-uuid"},
        {"worker_connected": "yes"},
        {"worker_connected": 1},
    ],
)
async def test_bad_registration_body_is_400(lkps: Lkps, body: dict[str, Any]) -> None:
    response = await lkps.register(**body)
    assert response.status_code == 400, response.text


async def test_empty_body_registers(lkps: Lkps) -> None:
    response = await lkps.http.post(
        "/api/agent/register", headers={"Authorization": f"Bearer {lkps.app_token()}"}
    )
    assert response.status_code == 200, response.text


async def test_presence_expires_after_the_ttl(lkps: Lkps, clock: FakeClock) -> None:
    await lkps.register(enforce_client_authz=False)
    clock.advance(89)
    assert (await lkps.start_session()).status_code == 200
    clock.advance(1)
    assert (await lkps.start_session()).status_code == 404


async def test_heartbeat_keeps_the_agent_present(lkps: Lkps, clock: FakeClock) -> None:
    registration = (await lkps.register(enforce_client_authz=False)).json()["registration_id"]
    for _ in range(5):
        clock.advance(60)
        response = await lkps.heartbeat(registration_id=registration)
        assert response.status_code == 200
        assert response.json()["connected"] is True
    assert (await lkps.start_session()).status_code == 200


async def test_heartbeat_after_expiry_is_404_and_registering_again_heals(
    lkps: Lkps, clock: FakeClock
) -> None:
    registration = (await lkps.register(enforce_client_authz=False)).json()["registration_id"]
    clock.advance(91)
    assert (await lkps.heartbeat(registration_id=registration)).status_code == 404
    assert (await lkps.heartbeat()).status_code == 404
    assert (await lkps.register(enforce_client_authz=False)).status_code == 200
    assert (await lkps.start_session()).status_code == 200


async def test_heartbeat_for_another_agents_registration_is_404(lkps: Lkps) -> None:
    registration = (await lkps.register(AGENT)).json()["registration_id"]
    assert (await lkps.heartbeat(AGENT_2, registration_id=registration)).status_code == 404


async def test_registering_again_with_the_id_renews_it(lkps: Lkps, clock: FakeClock) -> None:
    first = (await lkps.register()).json()
    clock.advance(80)
    second = (await lkps.register(registration_id=first["registration_id"])).json()
    assert second["registration_id"] == first["registration_id"]
    assert second["token"] != first["token"] or second["expires_at"] != first["expires_at"]
    clock.advance(80)  # 160 s after the first registration, 80 after the renewal
    assert (await lkps.start_session(token=lkps.user_token(client=CLIENT_A))).status_code == 200
    events = [record.event for record in await lkps.audit_records()]
    assert events[:2] == ["agent.register", "agent.renew"]


async def test_renewing_an_expired_registration_starts_a_new_one(
    lkps: Lkps, clock: FakeClock
) -> None:
    first = (await lkps.register()).json()["registration_id"]
    clock.advance(91)
    second = (await lkps.register(registration_id=first)).json()["registration_id"]
    assert second != first


async def test_a_worker_not_yet_connected_to_livekit_is_not_present(lkps: Lkps) -> None:
    # The SDK registers before its worker reaches LiveKit: a session started then would
    # be dispatched to nobody, and LiveKit drops such a job silently.
    registered = await lkps.register(enforce_client_authz=False, worker_connected=False)
    assert registered.status_code == 200
    registration = registered.json()["registration_id"]
    assert (await lkps.start_session()).status_code == 404
    # Still a live registration: heartbeats are answered.
    beat = await lkps.heartbeat(registration_id=registration)
    assert beat.status_code == 200
    assert (await lkps.start_session()).status_code == 404  # omitted: unchanged
    await lkps.heartbeat(registration_id=registration, worker_connected=True)
    assert (await lkps.start_session()).status_code == 200
    # The worker lost LiveKit: no more sessions until it is back.
    await lkps.heartbeat(registration_id=registration, worker_connected=False)
    assert (await lkps.start_session()).status_code == 404
    # A renewal keeps the state unless it says otherwise.
    await lkps.register(registration_id=registration, enforce_client_authz=False)
    assert (await lkps.start_session()).status_code == 404
    await lkps.register(
        registration_id=registration, enforce_client_authz=False, worker_connected=True
    )
    assert (await lkps.start_session()).status_code == 200
    record = (await lkps.audit_records())[-2]
    assert record.event == "agent.renew"
    assert record.as_json()["details"]["worker_connected"] is True


async def test_one_connected_worker_is_enough(lkps: Lkps) -> None:
    await lkps.register(enforce_client_authz=False, worker_connected=False)
    assert (await lkps.start_session()).status_code == 404
    await lkps.register(enforce_client_authz=False)  # a worker that never says: connected
    assert (await lkps.start_session()).status_code == 200
    agents = await lkps.http.get(
        "/api/agents",
        headers={"Authorization": f"Bearer {lkps.user_token('ops.admin', roles=['LKPS.Admin'])}"},
    )
    [agent] = agents.json()["agents"]
    assert (agent["present"], agent["active_registrations"], agent["connected_registrations"]) == (
        True,
        2,
        1,
    )


async def test_graceful_deregistration_gives_404_at_once(lkps: Lkps) -> None:
    await lkps.register(enforce_client_authz=False)
    response = await lkps.deregister()
    assert response.status_code == 204
    assert response.content == b""
    assert (await lkps.start_session()).status_code == 404


async def test_agent_stays_present_until_its_last_worker_leaves(lkps: Lkps) -> None:
    workers = [
        (await lkps.register(enforce_client_authz=False)).json()["registration_id"]
        for _ in range(3)
    ]
    assert len(set(workers)) == 3
    for worker in workers[:2]:
        assert (await lkps.deregister(registration_id=worker)).status_code == 204
        assert (await lkps.start_session()).status_code == 200
    await lkps.deregister(registration_id=workers[2])
    assert (await lkps.start_session()).status_code == 404


async def test_one_live_worker_keeps_the_agent_present_while_others_lapse(
    lkps: Lkps, clock: FakeClock
) -> None:
    live = (await lkps.register(enforce_client_authz=False)).json()["registration_id"]
    await lkps.register(enforce_client_authz=False)
    clock.advance(60)
    await lkps.heartbeat(registration_id=live)
    clock.advance(60)
    assert (await lkps.start_session()).status_code == 200


async def test_deregistering_without_an_id_ends_every_registration(lkps: Lkps) -> None:
    for _ in range(3):
        await lkps.register(enforce_client_authz=False)
    assert (await lkps.deregister()).status_code == 204
    assert (await lkps.start_session()).status_code == 404
    [deregistration] = [r for r in await lkps.audit_records() if r.event == "agent.deregister"]
    assert len(deregistration.as_json()["details"]["ended_registrations"]) == 3


async def test_user_token_cannot_heartbeat_or_deregister(lkps: Lkps) -> None:
    await lkps.register()
    for path in ("/api/agent/heartbeat", "/api/agent/deregister"):
        response = await lkps.post(path, lkps.user_token(), {})
        assert response.status_code == 403, path


async def test_expired_registrations_are_audited_once(lkps: Lkps, clock: FakeClock) -> None:
    registrations = {(await lkps.register()).json()["registration_id"] for _ in range(2)}
    clock.advance(91)
    assert await lkps.services.sweeper.sweep() == 2
    assert await lkps.services.sweeper.sweep() == 0
    expired = [r for r in await lkps.audit_records() if r.event == "agent.expire"]
    assert {r.registration_id for r in expired} == registrations
    assert all(r.agent_id == AGENT and r.outcome == "recorded" for r in expired)


async def test_deregistered_registrations_are_not_reported_as_expired(
    lkps: Lkps, clock: FakeClock
) -> None:
    await lkps.register()
    await lkps.deregister()
    clock.advance(91)
    assert await lkps.services.sweeper.sweep() == 0


async def test_concurrent_writers_and_readers_never_fail(lkps: Lkps) -> None:
    """Registrations, heartbeats and session starts at once: SQLite writers queue on its
    lock instead of failing, and every reply is a success."""
    import asyncio

    registration = (await lkps.register(enforce_client_authz=False)).json()["registration_id"]
    calls = (
        [lkps.register(enforce_client_authz=False) for _ in range(40)]
        + [lkps.heartbeat(registration_id=registration) for _ in range(40)]
        + [lkps.start_session(token=lkps.user_token(f"u{i}")) for i in range(80)]
        + [lkps.register(AGENT_2) for _ in range(20)]
    )
    responses = await asyncio.gather(*calls)
    assert {r.status_code for r in responses} == {200}
    assert (await lkps.services.audit.verify()).ok
