"""The relay on in-memory sockets: what it refuses (and audits), what it changes, and
that both sides end together."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from livekit.protocol import agent as proto

from lkps.gateway import GatewayRelay, WorkerSession, WorkerStatus
from lkps.gateway.sockets import Closed, Frame, RelaySocket, UpstreamUnavailable
from tests.conftest import AGENT, AGENT_2

pytestmark = pytest.mark.unit

LIVEKIT_URL = "ws://livekit.example:7880"
SESSION = WorkerSession(AGENT, "reg-1", "203.0.113.9")


class MemorySocket:
    """One end of an in-memory WebSocket: `send` arrives at the peer's `receive`."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Frame] = asyncio.Queue()
        self.peer: MemorySocket | None = None
        self.closed: Closed | None = None

    async def receive(self) -> Frame:
        if self.closed is not None and self.inbox.empty():
            return Closed(1006)
        return await self.inbox.get()

    async def send(self, data: bytes) -> None:
        if self.closed is not None:
            raise ConnectionError("closed")
        assert self.peer is not None
        await self.peer.inbox.put(data)

    async def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = Closed(code, reason)
            assert self.peer is not None
            await self.peer.inbox.put(Closed(code, reason))


def pipe() -> tuple[MemorySocket, MemorySocket]:
    a, b = MemorySocket(), MemorySocket()
    a.peer, b.peer = b, a
    return a, b


@dataclass
class Upstreams:
    """A LiveKit that accepts (or refuses) the relay's connections."""

    down: bool = False
    dialled: list[tuple[str, str]] = field(default_factory=list)
    livekit_ends: list[MemorySocket] = field(default_factory=list)

    async def connect(self, url: str, token: str) -> RelaySocket:
        self.dialled.append((url, token))
        if self.down:
            raise UpstreamUnavailable("connection refused")
        relay_end, livekit_end = pipe()
        self.livekit_ends.append(livekit_end)
        return relay_end


@dataclass
class Recorder:
    refusals: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, Any]] = field(default_factory=list)

    async def refused(self, **fields: Any) -> None:
        self.refusals.append(fields)

    async def connected(self, worker: WorkerSession) -> None:
        self.events.append(("connected", worker.agent_id))

    async def registered(self, worker: WorkerSession, worker_id: str) -> None:
        self.events.append(("registered", worker_id))

    async def status(self, worker: WorkerSession, status: WorkerStatus) -> None:
        self.events.append(("status", status))

    async def closed(self, worker: WorkerSession) -> None:
        self.events.append(("closed", worker.agent_id))

    ending: asyncio.Future[str] | None = None

    def ended(self, worker: WorkerSession) -> asyncio.Future[str]:
        if self.ending is None:
            self.ending = asyncio.get_running_loop().create_future()
        return self.ending

    def end(self, reason: str) -> None:
        """LKPS ends the connection's registration (what LiveConnections does)."""
        self.ended(SESSION).set_result(reason)


@dataclass
class Rig:
    relay: GatewayRelay
    upstreams: Upstreams
    recorder: Recorder
    worker: MemorySocket  # the worker's end
    task: asyncio.Task[None]

    async def livekit(self) -> MemorySocket:
        """LiveKit's end, once the relay has dialled it."""
        for _ in range(10_000):
            if self.upstreams.livekit_ends:
                break
            await asyncio.sleep(0)
        return self.upstreams.livekit_ends[0]


def _rig(*, down: bool = False, register_timeout: float = 5.0) -> Rig:
    upstreams, recorder = Upstreams(down=down), Recorder()
    relay = GatewayRelay(
        livekit_url=LIVEKIT_URL,
        worker_token=lambda agent_id: f"livekit-token-for-{agent_id}",
        connector=upstreams,
        refusals=recorder,
        observer=recorder,
        register_timeout=register_timeout,
        max_message_bytes=4096,
    )
    worker, relay_end = pipe()
    task = asyncio.create_task(relay.serve(relay_end, SESSION))
    return Rig(relay, upstreams, recorder, worker, task)


def register(agent_name: str = AGENT) -> bytes:
    message = proto.WorkerMessage()
    message.register.agent_name = agent_name
    message.register.type = proto.JT_ROOM
    return message.SerializeToString()


def status(
    load: float, jobs: int = 0, worker_status: proto.WorkerStatus = proto.WS_AVAILABLE
) -> bytes:
    message = proto.WorkerMessage()
    message.update_worker.status = worker_status
    message.update_worker.load = load
    message.update_worker.job_count = jobs
    return message.SerializeToString()


def assignment(url: str = "") -> bytes:
    message = proto.ServerMessage()
    message.assignment.job.id = "AJ_1"
    message.assignment.url = url
    message.assignment.token = "job-token"
    return message.SerializeToString()


async def _received(socket: MemorySocket) -> Frame:
    return await asyncio.wait_for(socket.inbox.get(), 5)


async def _refused_with(rig: Rig, reason: str) -> dict[str, Any]:
    await asyncio.wait_for(rig.task, 5)
    assert rig.worker.inbox.get_nowait() == Closed(1008, reason)
    (refusal,) = rig.recorder.refusals
    assert refusal["reason"] == reason
    assert refusal["agent_id"] == AGENT and refusal["registration_id"] == "reg-1"
    assert refusal["client_ip"] == "203.0.113.9" and refusal["status"] == 1008
    return refusal


async def test_a_register_under_another_agents_name_is_refused_before_livekit() -> None:
    rig = _rig()
    await rig.worker.send(register(AGENT_2))
    refusal = await _refused_with(rig, "agent_name is not the agent this credential was issued to")
    assert refusal["requested_name"] == AGENT_2
    assert rig.upstreams.dialled == []  # LiveKit never heard of it


@pytest.mark.parametrize("name", ["", "not-a-uuid", AGENT.replace("-", ""), "{" + AGENT + "}"])
async def test_non_canonical_names_are_refused(name: str) -> None:
    rig = _rig()
    await rig.worker.send(register(name))
    await _refused_with(rig, "agent_name is not the agent this credential was issued to")


async def test_a_message_before_register_is_refused() -> None:
    rig = _rig()
    await rig.worker.send(status(0.1))
    await _refused_with(rig, "the first message must be a register")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\xff\xff\xff\xff", "unparseable worker message"),
        ("{}", "text frames are not part of the worker protocol"),
    ],
)
async def test_garbage_first_frames_are_refused(frame: bytes | str, reason: str) -> None:
    rig = _rig()
    assert rig.worker.peer is not None
    await rig.worker.peer.inbox.put(frame)
    await _refused_with(rig, reason)


async def test_silence_after_connecting_is_refused() -> None:
    rig = _rig(register_timeout=0.05)
    await _refused_with(rig, "no register within 0.05 s of connecting")


async def test_an_oversized_message_is_refused_with_1009() -> None:
    rig = _rig()
    await rig.worker.send(register() + b"\x00" * 5000)
    await asyncio.wait_for(rig.task, 5)
    assert rig.worker.inbox.get_nowait() == Closed(1009, "message too big")


async def test_the_register_goes_to_livekit_with_a_token_lkps_minted() -> None:
    rig = _rig()
    await rig.worker.send(register(AGENT.upper()))
    sent = proto.WorkerMessage.FromString(await _received(await rig.livekit()))  # type: ignore[arg-type]
    assert sent.register.agent_name == AGENT  # the canonical id, as sessions dispatch it
    assert rig.upstreams.dialled == [(f"{LIVEKIT_URL}/agent", f"livekit-token-for-{AGENT}")]
    await rig.worker.close(1000, "bye")
    await asyncio.wait_for(rig.task, 5)


async def test_both_ways_with_url_filled_in_and_observer_told() -> None:
    rig = _rig()
    await rig.worker.send(register())
    await _received(await rig.livekit())
    answer = proto.ServerMessage()
    answer.register.worker_id = "AW_1"
    await (await rig.livekit()).send(answer.SerializeToString())
    assert await _received(rig.worker) == answer.SerializeToString()

    await (await rig.livekit()).send(assignment())
    filled = proto.ServerMessage.FromString(await _received(rig.worker))  # type: ignore[arg-type]
    assert filled.assignment.url == LIVEKIT_URL and filled.assignment.token == "job-token"
    await (await rig.livekit()).send(assignment("wss://cloud.example"))
    kept = proto.ServerMessage.FromString(await _received(rig.worker))  # type: ignore[arg-type]
    assert kept.assignment.url == "wss://cloud.example"

    await rig.worker.send(status(0.25))
    assert await _received(await rig.livekit()) == status(0.25)
    await rig.worker.close(1000, "worker done")
    await asyncio.wait_for(rig.task, 5)
    assert (await rig.livekit()).inbox.get_nowait() == Closed(1000, "worker done")
    assert [name for name, _ in rig.recorder.events] == [
        "connected",
        "registered",
        "status",
        "closed",
    ]
    assert rig.recorder.events[2][1] == WorkerStatus(available=True, load=0.25, job_count=0)
    assert rig.recorder.refusals == []


async def test_a_second_register_is_refused_and_livekit_closed() -> None:
    rig = _rig()
    await rig.worker.send(register())
    await _received(await rig.livekit())
    await rig.worker.send(register())
    await _refused_with(rig, "a second register on the same connection")
    assert (await rig.livekit()).inbox.get_nowait() == Closed(
        1000, "worker refused by the LKPS gateway"
    )
    assert rig.recorder.events[-1] == ("closed", AGENT)


async def test_garbage_after_register_is_refused() -> None:
    rig = _rig()
    await rig.worker.send(register())
    await _received(await rig.livekit())
    await rig.worker.send(b"\xff\xff\xff\xff")
    await _refused_with(rig, "unparseable worker message")


async def test_livekit_closing_closes_the_worker_alike() -> None:
    rig = _rig()
    await rig.worker.send(register())
    await _received(await rig.livekit())
    await (await rig.livekit()).close(4001, "server going away")
    await asyncio.wait_for(rig.task, 5)
    assert rig.worker.inbox.get_nowait() == Closed(4001, "server going away")


async def test_abnormal_closure_is_sent_as_a_sendable_code() -> None:
    rig = _rig()
    await rig.worker.send(register())
    await _received(await rig.livekit())
    assert rig.worker.peer is not None
    await rig.worker.peer.inbox.put(Closed(1006, ""))
    await asyncio.wait_for(rig.task, 5)
    assert (await rig.livekit()).inbox.get_nowait() == Closed(1011, "")


async def test_livekit_down_tells_the_worker_to_try_again_later() -> None:
    rig = _rig(down=True)
    await rig.worker.send(register())
    await asyncio.wait_for(rig.task, 5)
    assert rig.worker.inbox.get_nowait() == Closed(1013, "LiveKit is unavailable; try again later")
    assert rig.recorder.refusals == [] and rig.recorder.events == []


async def test_a_cancelled_relay_closes_both_sides() -> None:
    rig = _rig()
    await rig.worker.send(register())
    await _received(await rig.livekit())
    rig.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rig.task
    assert rig.worker.inbox.get_nowait() == Closed(1001, "gateway closing")
    assert (await rig.livekit()).inbox.get_nowait() == Closed(1001, "gateway closing")
    assert rig.recorder.events[-1] == ("closed", AGENT)


async def test_a_worker_that_leaves_before_register_costs_nothing() -> None:
    rig = _rig()
    await rig.worker.close(1000, "")
    await asyncio.wait_for(rig.task, 5)
    assert rig.upstreams.dialled == [] and rig.recorder.refusals == []


ENDED = "the registration this credential was issued for has ended; register again"


async def _registered(rig: Rig) -> MemorySocket:
    """The worker registered, and LiveKit answered: LiveKit's end."""
    await rig.worker.send(register())
    livekit = await rig.livekit()
    await _received(livekit)
    answer = proto.ServerMessage()
    answer.register.worker_id = "AW_1"
    await livekit.send(answer.SerializeToString())
    await _received(rig.worker)
    return livekit


async def test_an_ended_registration_closes_an_idle_worker_at_once() -> None:
    rig = _rig()
    livekit = await _registered(rig)
    await rig.worker.send(status(0.1))
    await _received(livekit)
    rig.recorder.end(ENDED)
    await _refused_with(rig, ENDED)  # 1008 with the reason, audited
    assert livekit.inbox.get_nowait() == Closed(1000, "worker refused by the LKPS gateway")
    assert rig.recorder.events[-1] == ("closed", AGENT)


async def test_an_ended_registration_lets_a_draining_worker_finish_its_jobs() -> None:
    """lkps-agent deregisters before livekit-agents waits for its running jobs: the socket
    stays until a status reports none, and LiveKit hears the worker as full meanwhile."""
    rig = _rig()
    livekit = await _registered(rig)
    await rig.worker.send(status(0.2, jobs=2))
    await _received(livekit)
    rig.recorder.end(ENDED)
    await rig.worker.send(status(0.1, jobs=1))  # not yet draining, by its own report
    held = proto.WorkerMessage.FromString(await _received(livekit))  # type: ignore[arg-type]
    assert held.update_worker.status == proto.WS_FULL and held.update_worker.job_count == 1
    job = proto.WorkerMessage()
    job.update_job.job_id, job.update_job.status = "AJ_1", proto.JS_SUCCESS
    await rig.worker.send(job.SerializeToString())
    assert await _received(livekit) == job.SerializeToString()  # jobs' news still pass
    await livekit.send(assignment())  # and LiveKit's, both ways
    await _received(rig.worker)
    assert not rig.task.done() and rig.recorder.refusals == []

    await rig.worker.send(status(0.0, jobs=0, worker_status=proto.WS_FULL))  # jobs done
    await _refused_with(rig, ENDED)
    assert livekit.inbox.get_nowait() == Closed(1000, "worker refused by the LKPS gateway")


async def test_a_job_assigned_since_the_last_status_counts_as_running() -> None:
    """livekit-agents reports every 2.5 s: a registration that ends just after LiveKit
    assigned a job must not cut the worker that is running it."""
    rig = _rig()
    livekit = await _registered(rig)
    await rig.worker.send(status(0.1))  # no job, by its last report
    await _received(livekit)
    await livekit.send(assignment())
    await _received(rig.worker)
    rig.recorder.end(ENDED)
    for _ in range(10):  # the relay sees the end before the worker's next status
        await asyncio.sleep(0)
    assert not rig.task.done()
    await rig.worker.send(status(0.2, jobs=1))
    held = proto.WorkerMessage.FromString(await _received(livekit))  # type: ignore[arg-type]
    assert held.update_worker.status == proto.WS_FULL and not rig.task.done()
    await rig.worker.send(status(0.0, jobs=0))
    await _refused_with(rig, ENDED)


async def test_a_draining_worker_that_leaves_is_not_refused() -> None:
    rig = _rig()
    livekit = await _registered(rig)
    await rig.worker.send(status(0.2, jobs=1))
    await _received(livekit)
    rig.recorder.end(ENDED)
    await asyncio.sleep(0)
    await rig.worker.close(1000, "worker done")
    await asyncio.wait_for(rig.task, 5)
    assert livekit.inbox.get_nowait() == Closed(1000, "worker done")
    assert rig.recorder.refusals == []
