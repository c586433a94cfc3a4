"""A fake livekit-agents worker on LKPS's agent gateway, for the benchmarks: it opens
`<gateway URL>/agent` with its gateway credential, registers (protobuf
`RegisterWorkerRequest`), reports its status, and takes jobs.

`Worker` is one worker in a fleet that shares its counters (bench/gateway_workers.py);
`KeptWorker` keeps one worker of an agent connected from a thread of its own, so that
LKPS in gateway mode counts the agent present (bench/run.py --gateway, and the
gateway benchmark's baseline phase).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from livekit.protocol import agent as proto


@dataclass
class Counts:
    sent: Counter[str] = field(default_factory=Counter)  # worker -> LKPS, by kind
    received: Counter[str] = field(default_factory=Counter)  # LKPS -> worker, by kind
    closed: Counter[str] = field(default_factory=Counter)
    dispatch_s: list[float] = field(default_factory=list)  # join -> assignment at a worker

    def total_sent(self) -> int:
        return sum(self.sent.values())


class Host(Protocol):
    """What a worker shares with the others of its run."""

    counts: Counts
    joined_at: dict[str, float]  # room -> when its client joined (monotonic)
    job_seconds: float


@dataclass
class LoneHost:
    counts: Counts = field(default_factory=Counts)
    joined_at: dict[str, float] = field(default_factory=dict)
    job_seconds: float = 1.0


class Worker:
    """One fake livekit-agents worker: registers, reports its status, takes jobs. Its
    load is `base_load` plus 0.1 per running job; with `wander`, `base_load` moves at
    each report like a busy host's CPU (livekit-agents' default load): a random walk
    around 0.4, now and then crossing the 0.7 target, as tests/unit/gateway/test_live.py
    models it."""

    def __init__(
        self,
        agent_id: str,
        credential: str,
        gateway: str,
        host: Host,
        *,
        base_load: float = 0.0,
        wander: random.Random | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.credential = credential
        self.url = gateway.rstrip("/") + "/agent"
        self.host = host
        self.base_load = base_load
        self.wander = wander
        self.socket: aiohttp.ClientWebSocketResponse | None = None
        self.registered = asyncio.Event()
        self.jobs = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def connect(self, session: aiohttp.ClientSession) -> None:
        self.socket = await session.ws_connect(
            self.url,
            headers={"Authorization": f"Bearer {self.credential}"},
            autoping=True,
            heartbeat=None,
        )
        register = proto.WorkerMessage()
        register.register.type = proto.JT_ROOM
        register.register.agent_name = self.agent_id
        register.register.version = "bench"
        await self.send(register)
        self._spawn(self._receive())
        await asyncio.wait_for(self.registered.wait(), 30)

    async def send(self, message: proto.WorkerMessage) -> None:
        assert self.socket is not None
        kind = message.WhichOneof("message") or "?"
        self.host.counts.sent[kind] += 1
        await self.socket.send_bytes(message.SerializeToString())

    async def status(self) -> None:
        if self.wander is not None:
            step = self.wander.gauss(0, 0.04) + (0.4 - self.base_load) * 0.05
            self.base_load = min(1.0, max(0.0, self.base_load + step))
        update = proto.WorkerMessage()
        update.update_worker.status = proto.WS_AVAILABLE
        update.update_worker.load = min(self.base_load + 0.1 * self.jobs, 1.0)
        update.update_worker.job_count = self.jobs
        await self.send(update)

    @property
    def open(self) -> bool:
        return self.socket is not None and not self.socket.closed

    async def _receive(self) -> None:
        assert self.socket is not None
        async for frame in self.socket:
            if frame.type != aiohttp.WSMsgType.BINARY:
                continue
            message = proto.ServerMessage()
            message.ParseFromString(frame.data)
            kind = message.WhichOneof("message") or "?"
            self.host.counts.received[kind] += 1
            if kind == "register":
                self.registered.set()
            elif kind == "availability":
                await self._available(message.availability)
            elif kind == "assignment":
                self._spawn(self._run_job(message.assignment))
        self.host.counts.closed[str(self.socket.close_code)] += 1

    async def _available(self, request: proto.AvailabilityRequest) -> None:
        answer = proto.WorkerMessage()
        answer.availability.job_id = request.job.id
        answer.availability.available = True
        answer.availability.participant_identity = f"agent-{request.job.id}"
        await self.send(answer)

    async def _run_job(self, assignment: proto.JobAssignment) -> None:
        joined = self.host.joined_at.pop(assignment.job.room.name, None)
        if joined is not None:
            self.host.counts.dispatch_s.append(time.monotonic() - joined)
        self.jobs += 1
        try:
            for status, pause in (
                (proto.JS_RUNNING, self.host.job_seconds),
                (proto.JS_SUCCESS, 0.0),
            ):
                update = proto.WorkerMessage()
                update.update_job.job_id = assignment.job.id
                update.update_job.status = status
                await self.send(update)
                await asyncio.sleep(pause)
        finally:
            self.jobs -= 1

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        for task in list(self.tasks):
            task.cancel()


# (gateway credential, gateway URL) of the agent's current registration.
Credential = Callable[[], tuple[str, str]]


class KeptWorker:
    """One worker of `agent_id` kept connected through the gateway, reporting `load`
    every `interval` seconds (livekit-agents reports every 2.5 s; LKPS needs only the
    first), reconnecting with `credential()` whenever its socket closes. Runs its own
    event loop in a daemon thread: the benchmarks' drivers are synchronous."""

    def __init__(
        self, agent_id: str, credential: Credential, *, load: float = 0.1, interval: float = 5.0
    ) -> None:
        self.agent_id = agent_id
        self._credential = credential
        self._load = load
        self._interval = interval
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kept-worker", daemon=True)
        self.host = LoneHost()
        self.connects = 0
        self.failures: Counter[str] = Counter()

    def start(self, timeout: float = 30.0) -> KeptWorker:
        """Returns once the worker is registered with LiveKit through the gateway."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(
                f"no worker of {self.agent_id} registered through the gateway within "
                f"{timeout:.0f} s: {dict(self.failures)}"
            )
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)

    def _run(self) -> None:
        asyncio.run(self._keep())

    async def _keep(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with aiohttp.ClientSession() as session:
            while not self._stop.is_set():
                token, gateway = self._credential()
                worker = Worker(self.agent_id, token, gateway, self.host, base_load=self._load)
                try:
                    await worker.connect(session)
                    self.connects += 1
                    while worker.open and not self._stop.is_set():
                        await worker.status()
                        self._ready.set()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stop.wait(), self._interval)
                except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                    self.failures[type(exc).__name__] += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), 1.0)
                finally:
                    await worker.close()
