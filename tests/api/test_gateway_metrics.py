"""The gateway's worker gauges through the real relay: LKPS on a socket in gateway mode in
front of the LiveKit double, workers speaking `/agent` by hand. The registry is the
process's: each test's agent is its own, so no other test's workers count.
A real livekit-agents worker and multiprocess metrics: tests/e2e/test_gateway_metrics.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from livekit.protocol import agent
from prometheus_client import REGISTRY

from lkps.config import Settings
from lkps_testkit import EntraDouble
from lkps_testkit.livekit import LiveKitDouble
from tests.api.test_gateway_presence import Instance, eventually, serving
from tests.conftest import LIVEKIT_KEY, LIVEKIT_SECRET, FakeClock
from tests.livekit_double.fake_worker import FakeWorker

pytestmark = pytest.mark.api

STATES = ("available", "full", "draining")


@pytest.fixture
def livekit() -> Iterator[LiveKitDouble]:
    with LiveKitDouble(api_key=LIVEKIT_KEY, api_secret=LIVEKIT_SECRET) as double:
        yield double


@pytest.fixture
def lkps(
    settings_values: dict[str, Any], clock: FakeClock, entra: EntraDouble, livekit: LiveKitDouble
) -> Iterator[Instance]:
    settings = Settings(
        **(settings_values | {"livekit_url": livekit.url, "agent_connection": "gateway"})
    )
    with serving(settings, clock, entra, livekit) as instance:
        yield instance


def gauges(agent_id: str) -> tuple[dict[str, float], float]:
    workers = {
        state: REGISTRY.get_sample_value(
            "lkps_gateway_workers", {"agent": agent_id, "status": state}
        )
        or 0.0
        for state in STATES
    }
    load = REGISTRY.get_sample_value("lkps_gateway_worker_load", {"agent": agent_id})
    return workers, round(load or 0.0, 6)


class Agent:
    """An agent of the test's own (any app id may register), and its gauges."""

    def __init__(self, lkps: Instance) -> None:
        self.id = str(uuid.uuid4())
        self.lkps = lkps

    def register(self) -> dict[str, Any]:
        return self.lkps.register(self.id)

    def worker(self, registration: dict[str, Any]) -> FakeWorker:
        return self.lkps.worker(registration, agent_name=self.id)

    def reads(
        self, available: int = 0, full: int = 0, draining: int = 0, load: float = 0.0
    ) -> bool:
        expected = {"available": available, "full": full, "draining": draining}
        return gauges(self.id) == ({state: float(n) for state, n in expected.items()}, load)


async def test_workers_by_status_and_load_and_gone_when_they_leave(lkps: Instance) -> None:
    mine = Agent(lkps)
    reads = mine.reads
    assert reads()
    async with mine.worker(mine.register()) as first:
        async with mine.worker(mine.register()) as second:
            assert reads(available=2)  # counted from the relayed register
            await first.report(load=0.95)
            await second.report(load=0.7)  # at the target: full, as LiveKit counts it
            await eventually(lambda: reads(full=2, load=1.65), "both workers full")
            await second.report(load=0.1, status=agent.WS_FULL)
            await first.report(load=0.3)
            await eventually(lambda: reads(available=1, full=1, load=0.4), "one available")
        # The second worker closed its socket: it counts for nothing.
        await eventually(lambda: reads(available=1, load=0.3), "the closed worker gone")
    await eventually(lambda: reads(), "every worker gone")


async def test_a_worker_with_jobs_drains_when_its_registration_ends(lkps: Instance) -> None:
    mine = Agent(lkps)
    reads = mine.reads
    registration = mine.register()
    async with mine.worker(registration) as worker:
        await worker.send(
            agent.WorkerMessage(
                update_worker=agent.UpdateWorkerStatus(
                    load=0.2, status=agent.WS_AVAILABLE, job_count=1
                )
            )
        )
        await eventually(lambda: reads(available=1, load=0.2), "the status relayed")
        lkps.deregister(registration["registration_id"], mine.id)
        await eventually(lambda: reads(draining=1, load=0.2), "the worker draining")
        await worker.send(
            agent.WorkerMessage(
                update_worker=agent.UpdateWorkerStatus(
                    load=0.1, status=agent.WS_AVAILABLE, job_count=0
                )
            )
        )
        await worker.wait_closed()  # its job is done: the gateway closes it
        await eventually(lambda: reads(), "the drained worker gone")
