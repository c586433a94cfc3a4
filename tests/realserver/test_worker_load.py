"""What livekit-server itself does with the load a worker reports, which the agent guide
("The load a worker reports"), the end-to-end harness (a fixed load) and `job_count_load`
rely on: it offers a job only while a worker is below its `agents.target_load` (0.7),
whatever the worker's own threshold, and drops the job otherwise, never retrying.

A raw worker speaks the protocol to the real server: each load is set with an
`UpdateWorkerStatus` followed by a ping, whose pong proves the server has read the update
(it handles a worker's messages in order); a refused job is the server's own log line."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from livekit import api, rtc
from livekit.agents import AgentServer
from livekit.protocol import agent as proto

from lkps_agent import job_count_load
from lkps_client import Session
from lkps_testkit import EntraDouble, ServerThread, TlsFiles
from tests.backends import TestDatabase
from tests.conftest import AGENT
from tests.e2e.harness import (
    AgentProcess,
    LiveKitEndpoint,
    lkps_replica,
    running_agent,
    session_when_present,
    start_session,
)
from tests.realserver.conftest import RealLiveKit

pytestmark = pytest.mark.e2e

TIMEOUT = 30.0
EXAMPLE_TOPIC = "lkps.example"


class Jobs:
    """What `job_count_load` reads of a worker: its running jobs."""

    def __init__(self, running: int) -> None:
        self.active_jobs: list[Any] = [object()] * running


def load_of(max_jobs: int, running: int) -> float:
    return job_count_load(max_jobs)(cast(AgentServer, Jobs(running)))


class RawWorker:
    """One worker connection to livekit-server's `/agent`, messages kept in order."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.offers: list[str] = []  # rooms of the availability requests received
        self.pings = 0

    async def send(self, message: proto.WorkerMessage) -> None:
        await self.socket.send_bytes(message.SerializeToString())

    async def receive(self) -> proto.ServerMessage:
        while True:
            frame = await asyncio.wait_for(self.socket.receive(), TIMEOUT)
            assert frame.type == aiohttp.WSMsgType.BINARY, frame
            message = proto.ServerMessage()
            message.ParseFromString(frame.data)
            if message.WhichOneof("message") == "availability":
                self.offers.append(message.availability.job.room.name)
            return message

    async def report(self, load: float) -> None:
        """Report `load` (available), and return once the server has read it."""
        update = proto.WorkerMessage()
        update.update_worker.status = proto.WS_AVAILABLE
        update.update_worker.load = load
        await self.send(update)
        self.pings += 1
        ping = proto.WorkerMessage()
        ping.ping.timestamp = self.pings
        await self.send(ping)
        while True:
            message = await self.receive()
            if (
                message.WhichOneof("message") == "pong"
                and message.pong.last_timestamp == self.pings
            ):
                return


@pytest.fixture
async def raw_worker(livekit_server: RealLiveKit) -> AsyncIterator[tuple[RawWorker, str]]:
    """A registered raw worker of an agent name of its own."""
    name = f"load-{uuid.uuid4()}"
    token = (
        api.AccessToken(livekit_server.api_key, livekit_server.api_secret)
        .with_identity(name)
        .with_grants(api.VideoGrants(agent=True))
        .to_jwt()
    )
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"{livekit_server.url}/agent", headers={"Authorization": f"Bearer {token}"}
        ) as socket,
    ):
        worker = RawWorker(socket)
        register = proto.WorkerMessage()
        register.register.type = proto.JT_ROOM
        register.register.agent_name = name
        await worker.send(register)
        assert (await worker.receive()).WhichOneof("message") == "register"
        yield worker, name


def refused_pattern(agent_name: str) -> str:
    """livekit-server's log line for a job of `agent_name` it could place nowhere."""
    return rf'failed to send job request.*"agentName": "{re.escape(agent_name)}"'


async def refusals(livekit_server: RealLiveKit, name: str, count: int) -> None:
    """Until livekit-server has logged `count` jobs for `name` it could place nowhere."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while livekit_server.log_count(refused_pattern(name)) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{count} refusals for {name}"
        await asyncio.sleep(0.05)


async def test_livekit_offers_jobs_only_below_the_target_load(
    livekit_server: RealLiveKit, raw_worker: tuple[RawWorker, str]
) -> None:
    worker, name = raw_worker
    async with api.LiveKitAPI(
        livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
    ) as lkapi:

        async def dispatch(room: str) -> None:
            await lkapi.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=name, room=room)
            )

        # A worker running as many jobs as job_count_load allows (1.0), and one reporting
        # the target itself (0.7, a 32-bit float on the wire): no job for either.
        for refused, load in enumerate((load_of(1, 1), 0.7), start=1):
            await worker.report(load)
            await dispatch(f"{name}-refused-{refused}")
            await refusals(livekit_server, name, refused)

        # One job short of max_jobs (0.35 of 2): the next job is offered to it.
        await worker.report(load_of(2, 1))
        await dispatch(f"{name}-offered")
        while not worker.offers:
            await worker.receive()
    # The refused jobs were never offered, not even once the worker had room again.
    assert worker.offers == [f"{name}-offered"]


@asynccontextmanager
async def client_in(session: Session) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """A client in the session's room; yields the example agent's messages to it."""
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    room = rtc.Room()

    @room.on("data_received")
    def on_data(packet: rtc.DataPacket) -> None:
        if packet.topic == EXAMPLE_TOPIC:
            received.put_nowait(json.loads(packet.data))

    await asyncio.wait_for(room.connect(session.livekit_url, session.participant_token), TIMEOUT)
    try:
        yield received
    finally:
        await room.disconnect()


async def agent_logged(
    agent: AgentProcess,
    text: str,
    count: int,
    timeout: float = TIMEOUT,  # noqa: ASYNC109 (a test's wait gives up by itself)
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while agent.log_count(re.escape(text)) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{text!r} x{count} in the log"
        await asyncio.sleep(0.05)


@pytest.mark.backends("sqlite")
@pytest.mark.usefixtures("livekit_agents_port_taken")
async def test_an_agent_at_max_jobs_takes_no_session_until_one_ends(
    livekit_server: RealLiveKit,
    entra: EntraDouble,
    entra_server: ServerThread,
    entra_tls_server: ServerThread,
    tls: TlsFiles,
    database: TestDatabase,
    authz_file: Path,
    tmp_path: Path,
) -> None:
    """The example agent on lkps-agent with `load_fnc=job_count_load(1)` (AGENT_MAX_JOBS)
    and livekit-agents' production threshold (0.7): through LKPS and a real LiveKit, one
    session at a time, whatever the machine's CPU."""
    livekit = LiveKitEndpoint(livekit_server.url, livekit_server.api_key, livekit_server.api_secret)
    lkps = lkps_replica(
        tmp_path,
        entra=entra,
        jwks_url=entra.jwks_url(entra_server.url),
        database_url=database.url,
        authz_file=authz_file,
        livekit=livekit,
    ).start()
    full, available = "worker is at full capacity", "worker is below capacity"
    try:
        lkps.wait_ready()
        with running_agent(
            workdir=tmp_path,
            lkps_url=lkps.url,
            entra=entra,
            authority=entra_tls_server.url,
            ca_bundle=tls.ca_cert,
            load={"AGENT_MAX_JOBS": "1", "AGENT_LOAD_THRESHOLD": "0.7"},
        ) as agent:
            first = await asyncio.to_thread(session_when_present, lkps.url, entra, {"n": 1})
            async with client_in(first) as greetings:
                assert (await asyncio.wait_for(greetings.get(), 60))["metadata"] == {"n": 1}
                # One job of one: the worker reports load 1.0 (and itself full).
                await agent_logged(agent, full, 1)
                freed = agent.log_count(re.escape(available)) + 1
                refused = livekit_server.log_count(refused_pattern(AGENT))
                second = await asyncio.to_thread(start_session, lkps.url, entra, {"n": 2})
                async with client_in(second):
                    await refusals(livekit_server, AGENT, refused + 1)
            # The first client left; its job ends with the room (ended here rather than
            # by LiveKit 30 s later, its departure_timeout): then the worker takes
            # sessions again.
            await livekit_server.end_room(first.room_name)
            await agent_logged(agent, available, freed, timeout=90)
            third = await asyncio.to_thread(start_session, lkps.url, entra, {"n": 3})
            async with client_in(third) as greetings:
                assert (await asyncio.wait_for(greetings.get(), 60))["metadata"] == {"n": 3}
            await livekit_server.end_room(third.room_name)  # the agent stopped next drains no job
            # The second session's job never reached the agent (LiveKit does not retry).
            assert sorted(report["room"] for report in agent.reports()) == sorted(
                [first.room_name, third.room_name]
            )
    finally:
        lkps.stop()
