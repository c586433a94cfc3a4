"""The metrics server in multiprocess mode (`lkps serve` with several workers): the
gateway's `livesum` gauges add up the live worker processes, and a worker that died
(uvicorn restarts a crashed one) stops counting at the next scrape, though it never
closed its connections. Real processes writing to the test's own folder."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from lkps.cli.live_metrics import LiveProcessesCollector
from lkps.cli.metrics_server import dead_processes
from tests.processes import clean_environment

pytestmark = pytest.mark.cli

# A worker process relaying one full worker of the agent (with load 0.8), until its
# stdin closes.
WORKER = """
import sys
from lkps import metrics
metrics.GATEWAY_WORKERS.labels(sys.argv[1], "full").inc()
metrics.GATEWAY_WORKER_LOAD.labels(sys.argv[1]).set(0.8)
print("counted", flush=True)
sys.stdin.read()
"""


@contextmanager
def worker_process(folder: Path, agent: str) -> Iterator[subprocess.Popen[str]]:
    env = clean_environment(PROMETHEUS_MULTIPROC_DIR=str(folder))
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, agent],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "counted"
        yield process
    finally:
        process.kill()
        process.wait(timeout=30)


def scrape(registry: CollectorRegistry, agent: str) -> tuple[float, float]:
    """The agent's full workers and their summed load (rounded: float sums of 0.8)."""
    workers = registry.get_sample_value("lkps_gateway_workers", {"agent": agent, "status": "full"})
    load = registry.get_sample_value("lkps_gateway_worker_load", {"agent": agent})
    return workers or 0.0, round(load or 0.0, 6)


def stop(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    assert process.wait(timeout=30) == 0


def test_live_workers_add_up_and_a_dead_one_stops_counting(tmp_path: Path) -> None:
    agent = str(uuid.uuid4())
    registry = CollectorRegistry()
    LiveProcessesCollector(registry, str(tmp_path))
    with ExitStack() as stack:
        first = stack.enter_context(worker_process(tmp_path, agent))
        second = stack.enter_context(worker_process(tmp_path, agent))
        assert scrape(registry, agent) == (2.0, 1.6)
        assert dead_processes(str(tmp_path)) == []

        stop(first)  # exits without closing anything: its samples stay on disk
        assert dead_processes(str(tmp_path)) == [first.pid]
        assert scrape(registry, agent) == (1.0, 0.8)
        assert not list(tmp_path.glob(f"gauge_livesum_{first.pid}.db"))
        assert list(tmp_path.glob(f"gauge_livesum_{second.pid}.db"))
        stop(second)
        assert scrape(registry, agent) == (0.0, 0.0)


def test_without_the_sweep_a_dead_worker_would_count_forever(tmp_path: Path) -> None:
    """What the sweep is for: prometheus_client's own collector keeps a dead process's
    `livesum` samples until someone calls mark_process_dead."""
    agent = str(uuid.uuid4())
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(tmp_path))  # type: ignore[no-untyped-call]
    with worker_process(tmp_path, agent) as process:
        stop(process)
    assert scrape(registry, agent) == (1.0, 0.8)
