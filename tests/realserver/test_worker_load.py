"""What livekit-server itself does with the load a worker reports, which the agent guide
("The load a worker reports"), the end-to-end harness (a fixed load) and `job_count_load`
rely on: it offers a job only while a worker is below its `agents.target_load` (0.7),
whatever the worker's own threshold, and drops the job otherwise, never retrying.

A raw worker speaks the protocol to the real server: each load is set with an
`UpdateWorkerStatus` followed by a ping, whose pong proves the server has read the update
(it handles a worker's messages in order); a refused job is the server's own log line."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
from livekit import api
from livekit.agents import AgentServer
from livekit.protocol import agent as proto

from lkps_agent import job_count_load
from tests.realserver.conftest import RealLiveKit

pytestmark = pytest.mark.e2e

TIMEOUT = 30.0


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


async def refusals(livekit_server: RealLiveKit, name: str, count: int) -> None:
    """Until livekit-server has logged `count` jobs for `name` it could place nowhere."""
    assert livekit_server.log is not None
    pattern = re.compile(rf'failed to send job request.*"agentName": "{re.escape(name)}"')
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while len(pattern.findall(livekit_server.log.read_text(errors="replace"))) < count:
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
