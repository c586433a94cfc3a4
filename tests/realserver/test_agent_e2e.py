"""The whole flow against a real livekit-server: the example agent (lkps-agent, its own
process) registers with LKPS (`lkps serve`) on its Entra identity and connects its worker
with the token LKPS issued; a client starts a session through LKPS and joins with the
participant token; LiveKit itself dispatches the agent, which answers over data messages."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from livekit import rtc

from lkps_testkit import EntraDouble, ServerThread, TlsFiles
from tests.backends import TestDatabase
from tests.conftest import AGENT
from tests.e2e.harness import (
    LiveKitEndpoint,
    lkps_replica,
    running_agent,
    session_when_present,
)
from tests.realserver.conftest import RealLiveKit

# livekit-agents' fixed port 8081 is held throughout: the agent binds one of its own.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.backends("sqlite"),
    pytest.mark.usefixtures("livekit_agents_port_taken"),
]

TOPIC = "lkps.example"


async def test_the_agent_answers_a_client_through_a_real_livekit(
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
    ).start()
    try:
        lkps.wait_ready()
        with running_agent(
            workdir=tmp_path,
            lkps_url=lkps.url,
            entra=entra,
            authority=entra_tls_server.url,
            ca_bundle=tls.ca_cert,
        ) as agent:
            metadata = {"language": "de", "ticket": 4711, "nested": {"ok": True}}
            # LKPS counts the agent present only once its worker is registered with
            # LiveKit: a session started earlier would be dispatched to nobody.
            session = await asyncio.to_thread(session_when_present, lkps.url, entra, metadata)
            assert agent.log_count('"registered worker"') == 1
            assert session.livekit_url == livekit_server.url

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
                await room.local_participant.publish_data("ping", topic=TOPIC, reliable=True)
                assert await asyncio.wait_for(received.get(), 20) == {"echo": "ping"}
                agent_kind = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
                for _ in range(100):  # the data can arrive before the participant event
                    agents = [
                        participant
                        for participant in room.remote_participants.values()
                        if participant.kind == agent_kind
                    ]
                    if agents:
                        break
                    await asyncio.sleep(0.1)
                assert len(agents) == 1, room.remote_participants
                assert agents[0].identity.startswith("agent-")
                assert room.name == session.room_name
            finally:
                await room.disconnect()
                await livekit_server.end_room(session.room_name)  # the agent drains no job
            reports = agent.reports()
            assert [report["metadata"] for report in reports] == [metadata]
            assert reports[0]["room"] == session.room_name
            # The worker connected with LKPS's token: no LiveKit credential in its environment.
            assert not any(key.startswith("LIVEKIT_API") for key in agent.env)
    finally:
        lkps.stop()
