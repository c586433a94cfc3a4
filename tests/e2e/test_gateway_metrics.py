"""The gateway's worker gauges as an operator scrapes them: `lkps serve` with two worker
processes (multiprocess metrics) in gateway mode, the example agent (lkps-agent on
livekit-agents, a process) connected through it, reporting the load a file says."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AGENT
from tests.e2e.conftest import StackFactory
from tests.e2e.harness import wait_for
from tests.processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.backends("postgresql")]

STATES = ("available", "full", "draining")


def gateway_gauges(metrics_url: str) -> tuple[dict[str, float], float]:
    """AGENT's connected workers by status, and their summed load, as scraped."""
    workers = dict.fromkeys(STATES, 0.0)
    load = 0.0
    text = httpx.get(metrics_url, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("agent") != AGENT.lower():
                continue
            if sample.name == "lkps_gateway_workers":
                workers[sample.labels["status"]] += sample.value
            elif sample.name == "lkps_gateway_worker_load":
                load += sample.value
    return workers, load


def test_a_real_workers_status_and_load_and_its_disconnect(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    metrics_port = free_port()
    samples = tmp_path / "lkps-metrics"
    samples.mkdir()
    stack = make_stack(
        LKPS_AGENT_CONNECTION="gateway",
        LKPS_WORKERS="2",
        LKPS_METRICS_PORT=str(metrics_port),
        PROMETHEUS_MULTIPROC_DIR=str(samples),
    )
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    load_file = tmp_path / "agent-load"
    load_file.write_text("0.2")
    agent = stack.start_agent(load={"AGENT_LOAD_FILE": str(load_file), "AGENT_FIXED_LOAD": "0.2"})

    def reads(workers: dict[str, float], load: float) -> bool:
        seen = gateway_gauges(metrics_url)
        return seen[0] == workers and abs(seen[1] - load) < 1e-6

    available = {"available": 1.0, "full": 0.0, "draining": 0.0}
    wait_for(
        lambda: reads(available, 0.2) or not agent.running,
        timeout=90,
        what="the worker counted available at load 0.2",
    )
    assert agent.running, agent.log_text()[-3000:]

    # At livekit-agents' threshold (0.7) the worker reports itself full.
    load_file.write_text("0.75")
    full = {"available": 0.0, "full": 1.0, "draining": 0.0}
    wait_for(lambda: reads(full, 0.75), timeout=30, what="the worker counted full at 0.75")

    # Killed (no deregistration, no goodbye): its socket closes, and it counts for nothing.
    agent.kill()
    gone = dict.fromkeys(STATES, 0.0)
    wait_for(lambda: reads(gone, 0.0), timeout=30, what="the lost worker no longer counted")
