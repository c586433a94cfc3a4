"""`MeteredObserver`: the gateway's worker gauges (lkps_gateway_workers by status,
lkps_gateway_worker_load) follow what each connection reports, and a closed connection
takes back exactly what it added. Each test has agents of its own (the registry is the
process's)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY

from lkps.gateway import NoObserver, WorkerSession, WorkerStatus
from lkps.gateway.metered import STATES, MeteredObserver
from lkps.gateway.observer import ENDED_REGISTRATION

pytestmark = pytest.mark.unit

TARGET_LOAD = 0.7


def workers(agent: str) -> dict[str, float]:
    return {
        state: REGISTRY.get_sample_value("lkps_gateway_workers", {"agent": agent, "status": state})
        or 0.0
        for state in STATES
    }


def load(agent: str) -> float:
    return REGISTRY.get_sample_value("lkps_gateway_worker_load", {"agent": agent}) or 0.0


def counted(agent: str, **expected: int) -> bool:
    return workers(agent) == {state: float(expected.get(state, 0)) for state in STATES}


class Recording(NoObserver):
    """Passes nothing on but remembers the calls, and ends connections when told."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.futures: dict[str, asyncio.Future[str]] = {}

    async def connected(self, worker: WorkerSession) -> None:
        self.calls.append("connected")

    async def status(self, worker: WorkerSession, status: WorkerStatus) -> None:
        self.calls.append(f"status {status.load}")

    async def closed(self, worker: WorkerSession) -> None:
        self.calls.append("closed")

    def ended(self, worker: WorkerSession) -> asyncio.Future[str]:
        future = self.futures[worker.connection_id] = super().ended(worker)
        return future


def new_agent() -> str:
    return str(uuid.uuid4())


def session(agent: str) -> WorkerSession:
    return WorkerSession(agent.upper(), str(uuid.uuid4()), None)


def status(load: float, *, available: bool = True, jobs: int = 0) -> WorkerStatus:
    return WorkerStatus(available=available, load=load, job_count=jobs)


async def test_status_classes_and_summed_load_follow_the_reports() -> None:
    agent, inner = new_agent(), Recording()
    observer = MeteredObserver(inner, target_load=TARGET_LOAD)
    first, second = session(agent), session(agent)
    await observer.connected(first)
    await observer.connected(second)
    assert counted(agent, available=2) and load(agent) == 0  # counted as lowercase ids

    await observer.status(first, status(0.25))
    await observer.status(second, status(0.7))  # at the target: full, as LiveKit counts it
    assert counted(agent, available=1, full=1)
    assert load(agent) == pytest.approx(0.95)

    await observer.status(first, status(0.1, available=False))  # WS_FULL, whatever its load
    assert counted(agent, full=2) and load(agent) == pytest.approx(0.8)
    await observer.status(second, status(0.69))
    assert counted(agent, available=1, full=1)
    await observer.status(second, status(float("nan")))  # unknown: full, counted as 1
    await observer.status(first, status(-3.0, available=True))  # clamped to 0
    assert counted(agent, available=1, full=1) and load(agent) == pytest.approx(1.0)
    assert inner.calls[:2] == ["connected", "connected"] and inner.calls[-1] == "status -3.0"


async def test_a_closed_connection_takes_back_exactly_what_it_added() -> None:
    agent, other = new_agent(), new_agent()
    observer = MeteredObserver(Recording(), target_load=TARGET_LOAD)
    staying, leaving, elsewhere = session(agent), session(agent), session(other)
    for worker in (staying, leaving, elsewhere):
        await observer.connected(worker)
    for value in (0.1, 0.2, 0.3, 0.7, 0.33):  # loads whose float sums are not exact
        await observer.status(staying, status(value))
        await observer.status(leaving, status(value + 0.01))
    await observer.status(elsewhere, status(0.9))

    await observer.closed(leaving)
    assert counted(agent, available=1) and load(agent) == 0.33  # exactly
    await observer.closed(staying)
    await observer.closed(staying)  # a second close changes nothing
    assert counted(agent) and load(agent) == 0.0
    await observer.status(staying, status(0.5))  # a late report of a closed connection
    assert counted(agent) and load(agent) == 0.0
    assert counted(other, full=1) and load(other) == 0.9  # another agent's, untouched


async def test_draining_from_the_registrations_end_until_the_close() -> None:
    agent, inner = new_agent(), Recording()
    observer = MeteredObserver(inner, target_load=TARGET_LOAD)
    worker = session(agent)
    await observer.connected(worker)
    ended = observer.ended(worker)
    assert ended is inner.futures[worker.connection_id]  # the relay waits on the inner's
    await observer.status(worker, status(0.2, jobs=1))
    ended.set_result(ENDED_REGISTRATION)
    await asyncio.sleep(0)  # the future's callbacks
    assert counted(agent, draining=1)
    await observer.status(worker, status(0.1, available=False, jobs=1))  # the relay's WS_FULL
    assert counted(agent, draining=1) and load(agent) == pytest.approx(0.1)
    await observer.closed(worker)
    assert counted(agent) and load(agent) == 0.0


async def test_a_connection_the_inner_observer_refused_is_never_counted() -> None:
    class Failing(Recording):
        async def connected(self, worker: WorkerSession) -> None:
            raise RuntimeError("store down")

    agent = new_agent()
    observer = MeteredObserver(Failing(), target_load=TARGET_LOAD)
    worker = session(agent)
    with pytest.raises(RuntimeError):
        await observer.connected(worker)
    await observer.status(worker, status(0.5))
    assert counted(agent) and load(agent) == 0.0


async def test_a_cancelled_end_is_not_draining() -> None:
    agent = new_agent()
    observer = MeteredObserver(Recording(), target_load=TARGET_LOAD)
    worker = session(agent)
    await observer.connected(worker)
    observer.ended(worker).cancel()
    await asyncio.sleep(0)
    assert counted(agent, available=1)
