"""The load a worker reports: `LkpsAgentServer(load_fnc=...)` hands livekit-agents exactly
what it was given, and `job_count_load` counts the worker's own jobs, reaching full at
`max_jobs` and staying under the target before. (What a real worker then reports to
LiveKit: tests/livekit_double/test_agent_server.py and tests/e2e/test_agent_flow.py.)"""

from __future__ import annotations

import math
import struct
from typing import Any, cast

import pytest
from livekit.agents import AgentServer

from lkps_agent import AgentConfig, ConfigurationError, LkpsAgentServer, job_count_load

pytestmark = pytest.mark.unit

CONFIG = AgentConfig(lkps_url="https://lkps.test", scope="api://lkps.test/.default")


class Jobs:
    """Stands in for the server: `job_count_load` reads only `active_jobs`."""

    def __init__(self, running: int) -> None:
        self.active_jobs: list[Any] = [object()] * running


def load_at(max_jobs: int, running: int, **options: float) -> float:
    return job_count_load(max_jobs, **options)(cast(AgentServer, Jobs(running)))


def as_float32(value: float) -> float:
    """What LiveKit and LKPS read: `UpdateWorkerStatus.load` is a protobuf float."""
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


def test_the_load_fnc_reaches_livekit_agents_as_given() -> None:
    def without_argument() -> float:
        return 0.25

    def with_the_server(server: AgentServer) -> float:
        return 0.5

    for load_fnc in (without_argument, with_the_server, job_count_load(3)):
        server = LkpsAgentServer(config=CONFIG, load_fnc=load_fnc)
        assert server.load_fnc is load_fnc
    # Not given: livekit-agents' default (the machine's CPU), chosen when the worker runs.
    assert LkpsAgentServer(config=CONFIG).load_fnc is None


@pytest.mark.parametrize(
    ("max_jobs", "loads"),
    [
        (1, [0.0, 1.0, 1.0]),
        (2, [0.0, 0.35, 1.0, 1.0]),
        (4, [0.0, 0.175, 0.35, 0.525, 1.0, 1.0]),
    ],
)
def test_job_count_load_counts_the_workers_own_jobs(max_jobs: int, loads: list[float]) -> None:
    assert [load_at(max_jobs, running) for running in range(len(loads))] == pytest.approx(loads)


@pytest.mark.parametrize("max_jobs", [1, 2, 3, 4, 7, 10, 64])
def test_max_jobs_is_where_dispatch_stops(max_jobs: int) -> None:
    """livekit-server offers a job below its target (0.7), LKPS answers 503 at/above its
    own (the same 0.7), both reading the load as a 32-bit float: one job short of
    max_jobs is under the target on both sides; max_jobs is at or above it on both."""
    target = 0.7
    below = as_float32(load_at(max_jobs, max_jobs - 1))
    full = as_float32(load_at(max_jobs, max_jobs))
    assert below < as_float32(target) and below < target
    assert full >= target and full >= as_float32(target)


def test_another_target_moves_the_scale() -> None:
    assert load_at(4, 2, target_load=0.8) == pytest.approx(0.4)
    assert load_at(4, 4, target_load=0.8) == 1.0


@pytest.mark.parametrize("max_jobs", [0, -1, 1.5, True, "4"])
def test_a_max_jobs_that_cannot_work_is_refused(max_jobs: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_jobs must be a whole number"):
        job_count_load(max_jobs)


@pytest.mark.parametrize("target", [0.0, -0.5, 1.5, math.inf, math.nan])
def test_a_target_outside_livekits_range_is_refused(target: float) -> None:
    with pytest.raises(ConfigurationError, match="target_load must be in"):
        job_count_load(4, target_load=target)


def test_the_function_names_its_limit() -> None:
    """In livekit-agents' logs and a debugger, which load function the worker runs."""
    assert job_count_load(4).__name__ == "job_count_load(max_jobs=4)"
