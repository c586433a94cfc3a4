"""The agent gateway against a real livekit-server (issue 11, finding 3): a worker can
register only as the agent its credential names, nothing LKPS hands an agent opens
LiveKit's `/agent` directly, and the example agent (lkps-agent) serves a client through
the gateway, its job running on across a renewal of its credential."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from livekit import rtc
from livekit.protocol import agent

from lkps.app import create_app
from lkps.config import Settings
from lkps_testkit import EntraDouble, ServerThread, TlsFiles
from tests.backends import TestDatabase
from tests.conftest import AGENT, AGENT_2, API_AUDIENCE, CLIENT_A
from tests.e2e.harness import LiveKitEndpoint, lkps_replica, running_agent, session_when_present
from tests.realserver.conftest import RealLiveKit

pytestmark = [pytest.mark.e2e, pytest.mark.backends("sqlite")]

TOPIC = "lkps.example"
WAIT = 20.0


@pytest.fixture
def lkps_url(livekit_server: RealLiveKit, settings_values: dict[str, Any]) -> Iterator[str]:
    """LKPS in gateway mode in front of the real server (uvicorn in a thread)."""
    settings = Settings(
        **(
            settings_values
            | {
                "livekit_url": livekit_server.url,
                "livekit_api_key": livekit_server.api_key,
                "livekit_api_secret": livekit_server.api_secret,
                "agent_connection": "gateway",
            }
        )
    )
    with ServerThread(create_app(settings)) as server:
        yield server.url


def register(lkps_url: str, entra: EntraDouble, agent_id: str) -> dict[str, Any]:
    token = entra.app_token(audience=API_AUDIENCE, client_app_id=agent_id)
    response = httpx.post(
        f"{lkps_url}/api/agent/register",
        json={"enforce_client_authz": False},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def send_register(socket: aiohttp.ClientWebSocketResponse, agent_name: str) -> None:
    request = agent.RegisterWorkerRequest(type=agent.JT_ROOM, agent_name=agent_name)
    await socket.send_bytes(agent.WorkerMessage(register=request).SerializeToString())


async def server_message(socket: aiohttp.ClientWebSocketResponse) -> agent.ServerMessage:
    frame = await socket.receive(timeout=WAIT)
    assert frame.type == aiohttp.WSMsgType.BINARY, frame
    return agent.ServerMessage.FromString(frame.data)


async def test_agent_a_cannot_take_agent_bs_sessions(
    lkps_url: str, livekit_server: RealLiveKit, entra: EntraDouble
) -> None:
    a, b = register(lkps_url, entra, AGENT), register(lkps_url, entra, AGENT_2)
    gateway = f"{b['gateway_url']}/agent"
    async with aiohttp.ClientSession() as http:
        b_worker = await http.ws_connect(gateway, headers={"Authorization": f"Bearer {b['token']}"})
        await send_register(b_worker, AGENT_2)
        assert (await server_message(b_worker)).register.worker_id  # the real server's answer

        impostor = await http.ws_connect(gateway, headers={"Authorization": f"Bearer {a['token']}"})
        await send_register(impostor, AGENT_2)
        closed = await impostor.receive(timeout=WAIT)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1008
        assert "not the agent this credential was issued to" in str(closed.extra)

        # B's session goes to B's worker, and the job joins the room at LiveKit.
        user = entra.user_token(audience=API_AUDIENCE, client_app_id=CLIENT_A)
        session = httpx.post(
            f"{lkps_url}/api/session/start",
            json={"agent_entra_app_id": AGENT_2},
            headers={"Authorization": f"Bearer {user}"},
        ).json()
        room = rtc.Room()
        await asyncio.wait_for(
            room.connect(session["livekit_url"], session["participant_token"]), WAIT
        )
        try:
            offer = await server_message(b_worker)
            while offer.WhichOneof("message") != "availability":
                offer = await server_message(b_worker)
            assert offer.availability.job.agent_name == AGENT_2
            assert offer.availability.job.room.name == session["room_name"]
            answer = agent.AvailabilityResponse(
                job_id=offer.availability.job.id, available=True, participant_identity="agent-b"
            )
            await b_worker.send_bytes(agent.WorkerMessage(availability=answer).SerializeToString())
            assigned = await server_message(b_worker)
            while assigned.WhichOneof("message") != "assignment":
                assigned = await server_message(b_worker)
            # OSS livekit-server leaves the URL empty; the gateway fills in LiveKit's.
            assert assigned.assignment.url == livekit_server.url
        finally:
            await room.disconnect()
            await b_worker.close()

    auditor = entra.app_token(audience=API_AUDIENCE, client_app_id=CLIENT_A, roles=["LKPS.Auditor"])
    records = httpx.get(
        f"{lkps_url}/api/audit",
        params={"event": "agent.worker_refused"},
        headers={"Authorization": f"Bearer {auditor}"},
    ).json()["records"]
    [refusal] = records
    assert refusal["agent_id"] == AGENT
    assert refusal["details"]["requested_agent_name"] == AGENT_2


async def test_livekit_refuses_what_lkps_hands_an_agent(
    lkps_url: str, livekit_server: RealLiveKit, entra: EntraDouble
) -> None:
    registration = register(lkps_url, entra, AGENT)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(
                f"{livekit_server.url}/agent",
                headers={"Authorization": f"Bearer {registration['token']}"},
            )
    assert refused.value.status == 401


async def test_the_example_agent_serves_a_client_through_the_gateway(
    livekit_server: RealLiveKit,
    entra: EntraDouble,
    entra_server: ServerThread,
    entra_tls_server: ServerThread,
    tls: TlsFiles,
    database: TestDatabase,
    authz_file: Path,
    tmp_path: Path,
) -> None:
    livekit = LiveKitEndpoint(livekit_server.url, livekit_server.api_key, livekit_server.api_secret)
    lkps = lkps_replica(
        tmp_path,
        entra=entra,
        jwks_url=entra.jwks_url(entra_server.url),
        database_url=database.url,
        authz_file=authz_file,
        livekit=livekit,
        # A 12 s credential: lkps-agent renews it at ~9.6 s, while the job runs.
        LKPS_AGENT_CONNECTION="gateway",
        LKPS_AGENT_TOKEN_TTL="12",
    ).start()
    try:
        lkps.wait_ready()
        with running_agent(
            workdir=tmp_path,
            lkps_url=lkps.url,
            entra=entra,
            authority=entra_tls_server.url,
            ca_bundle=tls.ca_cert,
        ) as example:
            metadata = {"through": "gateway"}
            session = await asyncio.to_thread(session_when_present, lkps.url, entra, metadata)
            received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            room = rtc.Room()

            @room.on("data_received")
            def on_data(packet: rtc.DataPacket) -> None:
                if packet.topic == TOPIC:
                    received.put_nowait(json.loads(packet.data))

            await asyncio.wait_for(room.connect(session.livekit_url, session.participant_token), 20)
            try:
                greeting = await asyncio.wait_for(received.get(), 60)
                assert greeting == {"greeting": f"hello from {AGENT}", "metadata": metadata}
                renewed = '"renewed the LKPS registration"'
                for _ in range(400):
                    if example.log_count(renewed) >= 1:
                        break
                    await asyncio.sleep(0.1)
                assert example.log_count(renewed) >= 1, example.log_text()[-3000:]
                # The job runs on after the renewal: it still answers.
                await room.local_participant.publish_data("ping", topic=TOPIC, reliable=True)
                assert await asyncio.wait_for(received.get(), 20) == {"echo": "ping"}
            finally:
                await room.disconnect()
                await livekit_server.end_room(session.room_name)  # the agent drains no job
            assert example.log_count('"registered worker"') == 1  # one connection throughout
    finally:
        lkps.stop()
