"""The agent gateway on real sockets: LKPS (uvicorn, in a thread) in gateway mode in front
of the LiveKit double, workers speaking the `/agent` protocol by hand.

The security property (issue 11, finding 3): a worker can only ever register as the
agent its credential names, and nothing LKPS hands an agent works at LiveKit directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import httpx
import jwt
import pytest
from livekit.api import VideoGrants
from livekit.protocol import agent
from pydantic import SecretStr

from lkps.app import create_app
from lkps.config import Settings
from lkps.gateway.credentials import derive_key
from lkps_testkit import EntraDouble, ServerThread
from lkps_testkit.livekit import LiveKitDouble
from tests.conftest import AGENT, AGENT_2, API_AUDIENCE, CLIENT_A, LIVEKIT_KEY, LIVEKIT_SECRET
from tests.e2e.conftest import StackFactory
from tests.e2e.harness import session_when_present, wait_for
from tests.e2e.test_agent_flow import JWT
from tests.livekit_double.fake_worker import FakeWorker

pytestmark = pytest.mark.e2e


@dataclass
class Gateway:
    url: str
    entra: EntraDouble
    livekit: LiveKitDouble

    def register(self, agent_id: str = AGENT) -> dict[str, Any]:
        token = self.entra.app_token(audience=API_AUDIENCE, client_app_id=agent_id)
        response = httpx.post(
            f"{self.url}/api/agent/register",
            json={"enforce_client_authz": False},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def start_session(self, agent_id: str) -> dict[str, Any]:
        token = self.entra.user_token(audience=API_AUDIENCE, client_app_id=CLIENT_A)
        response = httpx.post(
            f"{self.url}/api/session/start",
            json={"agent_entra_app_id": agent_id},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def refusals(self) -> list[dict[str, Any]]:
        token = self.entra.app_token(
            audience=API_AUDIENCE, client_app_id=CLIENT_A, roles=["LKPS.Auditor"]
        )
        response = httpx.get(
            f"{self.url}/api/audit",
            params={"event": "agent.worker_refused"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        records: list[dict[str, Any]] = response.json()["records"]
        return records

    def worker(self, registration: dict[str, Any], agent_name: str) -> FakeWorker:
        return FakeWorker(
            self.livekit,
            registration["token"],
            agent_name=agent_name,
            url=registration["gateway_url"],
        )


@pytest.fixture
def livekit() -> Iterator[LiveKitDouble]:
    with LiveKitDouble(api_key=LIVEKIT_KEY, api_secret=LIVEKIT_SECRET) as double:
        yield double


@pytest.fixture
def gateway(
    settings_values: dict[str, Any], livekit: LiveKitDouble, entra: EntraDouble
) -> Iterator[Gateway]:
    settings = Settings(
        **(settings_values | {"livekit_url": livekit.url, "agent_connection": "gateway"})
    )
    with ServerThread(create_app(settings)) as server:
        yield Gateway(server.url, entra, livekit)


async def _handshake_status(url: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{url}/agent", headers=headers)
    return refused.value.status


async def test_a_session_reaches_the_agent_through_the_gateway(gateway: Gateway) -> None:
    registration = gateway.register(AGENT)
    assert registration["gateway_url"] == gateway.url.replace("http", "ws")
    async with gateway.worker(registration, AGENT) as worker:
        [record] = gateway.livekit.workers(AGENT)
        assert record.claims["sub"] == AGENT  # LKPS's own worker token, not the agent's
        session = gateway.start_session(AGENT)
        await gateway.livekit.join_async(session["participant_token"])
        offer = await worker.next_offer()
        assert offer.job.agent_name == AGENT and offer.job.room.name == session["room_name"]
        await worker.answer(offer, identity="agent-bot")
        assigned = await worker.receive()
        assert assigned.assignment.url == gateway.livekit.url  # rooms at LiveKit
        assert assigned.assignment.token
    assert gateway.refusals() == []


@pytest.mark.parametrize(
    ("forwarded", "scheme"), [({"X-Forwarded-Proto": "https"}, "wss"), ({}, "ws")]
)
def test_behind_a_trusted_tls_proxy_agents_are_told_wss(
    gateway: Gateway, forwarded: dict[str, str], scheme: str
) -> None:
    # uvicorn believes X-Forwarded-Proto from LKPS_FORWARDED_ALLOW_IPS (127.0.0.1 here).
    token = gateway.entra.app_token(audience=API_AUDIENCE, client_app_id=AGENT)
    response = httpx.post(
        f"{gateway.url}/api/agent/register",
        json={},
        headers={"Authorization": f"Bearer {token}", "Host": "agents.example.com"} | forwarded,
    )
    assert response.json()["gateway_url"] == f"{scheme}://agents.example.com"


async def test_agent_a_cannot_register_as_agent_b(gateway: Gateway) -> None:
    b_worker = gateway.worker(gateway.register(AGENT_2), AGENT_2)
    impostor = gateway.worker(gateway.register(AGENT), AGENT_2)  # A's credential, B's name
    async with b_worker:
        try:
            await impostor.connect(register=False)
            await impostor.send(
                agent.WorkerMessage(
                    register=agent.RegisterWorkerRequest(type=agent.JT_ROOM, agent_name=AGENT_2)
                )
            )
            closed = await impostor.wait_closed()
        finally:
            await impostor.close()
        assert closed.data == 1008
        assert "not the agent this credential was issued to" in str(closed.extra)
        assert len(gateway.livekit.workers(AGENT_2)) == 1  # B's worker only

        # B's sessions still go to B.
        session = gateway.start_session(AGENT_2)
        await gateway.livekit.join_async(session["participant_token"])
        offer = await b_worker.next_offer()
        assert offer.job.agent_name == AGENT_2
    [refusal] = gateway.refusals()
    assert refusal["outcome"] == "denied" and refusal["status"] == 1008
    assert refusal["agent_id"] == AGENT and refusal["details"]["requested_agent_name"] == AGENT_2
    assert refusal["client_ip"] == "127.0.0.1" and refusal["registration_id"]


async def test_nothing_lkps_hands_out_works_at_livekit_directly(gateway: Gateway) -> None:
    registration = gateway.register(AGENT)
    direct = FakeWorker(gateway.livekit, registration["token"], agent_name=AGENT)
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await direct.connect()
    finally:
        await direct.close()
    assert refused.value.status == 401
    assert gateway.livekit.workers(AGENT, connected_only=False) == []


def _forged(**changes: Any) -> str:
    claims = {
        "iss": "lkps",
        "aud": "lkps-agent-gateway",
        "sub": AGENT,
        "rid": "0f0f0f0f-0000-4000-8000-000000000001",
        "exp": int((datetime.now(UTC) + timedelta(minutes=5)).timestamp()),
    } | changes
    return jwt.encode(claims, derive_key(SecretStr(LIVEKIT_SECRET)), algorithm="HS256")


@pytest.mark.parametrize(
    "case", ["none", "basic", "livekit-token", "expired", "wrong-audience", "garbage"]
)
async def test_hostile_handshakes_get_401_and_are_audited(gateway: Gateway, case: str) -> None:
    livekit_token = (
        gateway.livekit.token(AGENT, grants=VideoGrants(agent=True))
        if case == "livekit-token"
        else ""
    )
    headers = {
        "none": {},
        "basic": {"Authorization": "Basic YWdlbnQ6c2VjcmV0"},
        "livekit-token": {"Authorization": f"Bearer {livekit_token}"},
        "expired": {"Authorization": f"Bearer {_forged(exp=1_000_000)}"},
        "wrong-audience": {"Authorization": f"Bearer {_forged(aud='livekit')}"},
        "garbage": {"Authorization": "Bearer not-a-jwt"},
    }[case]
    assert await _handshake_status(gateway.url, headers) == 401
    [refusal] = gateway.refusals()
    assert refusal["status"] == 401 and refusal["outcome"] == "denied"
    assert gateway.livekit.workers(connected_only=False) == []


async def test_direct_mode_has_no_gateway(
    settings_values: dict[str, Any], livekit: LiveKitDouble
) -> None:
    settings = Settings(**(settings_values | {"livekit_url": livekit.url}))
    with ServerThread(create_app(settings)) as server:
        assert await _handshake_status(server.url, {}) == 404


# The example agent (lkps-agent, unchanged agent code) and `lkps serve` as processes.


@pytest.mark.backends("sqlite")
def test_the_example_agent_works_through_the_gateway_across_renewals(
    make_stack: StackFactory,
) -> None:
    # A 12 s credential: lkps-agent renews it at ~9.6 s. (A job held open across the
    # renewal needs a client in the room: tests/realserver/test_agent_gateway.py.)
    stack = make_stack(LKPS_AGENT_CONNECTION="gateway", LKPS_AGENT_TOKEN_TTL="12")
    agent = stack.start_agent()
    wait_for(
        lambda: stack.livekit.workers(AGENT) or not agent.running,
        timeout=90,
        what="the agent's worker connecting through the gateway",
    )
    assert agent.running, agent.log_text()[-3000:]
    [worker] = stack.livekit.workers(AGENT)
    assert worker.api_key == LIVEKIT_KEY and worker.claims["sub"] == AGENT  # minted by LKPS

    session = session_when_present(stack.lkps_url, stack.entra, {"through": "gateway"})
    stack.livekit.join(session.participant_token)
    job = stack.livekit.wait_for_job(AGENT, room=session.room_name)
    assert job.worker_id == worker.id
    reports = wait_for(agent.reports, timeout=30, what="the entrypoint running")
    assert [report["metadata"] for report in reports] == [{"through": "gateway"}]

    wait_for(
        lambda: agent.log_count('"renewed the LKPS registration"') >= 1,
        timeout=40,
        what="the credential being renewed",
    )
    # The worker's connection outlived the renewal (the credential is checked when a
    # connection opens), and the job was not failed by it.
    [first_job] = stack.livekit.jobs(AGENT)
    assert first_job.status in ("JS_RUNNING", "JS_SUCCESS"), first_job
    assert [w.id for w in stack.livekit.workers(AGENT, connected_only=False)] == [worker.id]
    second = session_when_present(stack.lkps_url, stack.entra, {"after": "renewal"})
    stack.livekit.join(second.participant_token)
    assert stack.livekit.wait_for_job(AGENT, room=second.room_name).worker_id == worker.id
    assert stack.livekit.dropped_dispatches == []
    logs = agent.log_text() + (stack.lkps.log_text() if stack.lkps else "")
    assert not JWT.findall(logs)
