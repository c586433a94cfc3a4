"""A worker that speaks the `/agent` protocol by hand, so tests control every answer
(refuse a job, never answer, report a load) where a real `AgentServer` would not."""

from __future__ import annotations

import asyncio
from types import TracebackType

import aiohttp
from livekit.protocol import agent

from lkps_testkit.livekit import LiveKitDouble

WAIT = 10.0


class FakeWorker:
    def __init__(
        self,
        livekit: LiveKitDouble,
        token: str,
        *,
        agent_name: str = "helper",
        url: str | None = None,
    ) -> None:
        self.livekit = livekit
        # Where the socket goes: the double itself, or LKPS's agent gateway in front of it.
        self.url = url or livekit.url
        self.token = token
        self.agent_name = agent_name
        self.worker_id = ""
        self.register_response: agent.RegisterWorkerResponse | None = None
        self._session = aiohttp.ClientSession()
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, *, register: bool = True) -> FakeWorker:
        self.ws = await self._session.ws_connect(
            f"{self.url}/agent", headers={"Authorization": f"Bearer {self.token}"}
        )
        if register:
            request = agent.RegisterWorkerRequest(
                type=agent.JobType.JT_ROOM, agent_name=self.agent_name, version="fake"
            )
            await self.send(agent.WorkerMessage(register=request))
            answer = await self.receive()
            assert answer.WhichOneof("message") == "register"
            self.register_response = answer.register
            self.worker_id = answer.register.worker_id
        return self

    async def send(self, message: agent.WorkerMessage) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(message.SerializeToString())

    async def receive(self) -> agent.ServerMessage:
        assert self.ws is not None
        frame = await self.ws.receive(timeout=WAIT)
        assert frame.type == aiohttp.WSMsgType.BINARY, frame
        return agent.ServerMessage.FromString(frame.data)

    async def next_offer(self) -> agent.AvailabilityRequest:
        message = await self.receive()
        assert message.WhichOneof("message") == "availability", message
        return message.availability

    async def answer(
        self, offer: agent.AvailabilityRequest, *, available: bool = True, identity: str = ""
    ) -> None:
        response = agent.AvailabilityResponse(
            job_id=offer.job.id,
            available=available,
            participant_identity=identity,
            participant_name="Helper",
            participant_attributes={"role": "helper"},
        )
        await self.send(agent.WorkerMessage(availability=response))

    async def report(self, *, load: float, status: agent.WorkerStatus = agent.WS_AVAILABLE) -> None:
        await self.send(
            agent.WorkerMessage(update_worker=agent.UpdateWorkerStatus(load=load, status=status))
        )

    async def wait_closed(self) -> aiohttp.WSMessage:
        assert self.ws is not None
        async with asyncio.timeout(WAIT):
            while True:
                frame = await self.ws.receive()
                if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    return frame

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        await self._session.close()

    async def __aenter__(self) -> FakeWorker:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
