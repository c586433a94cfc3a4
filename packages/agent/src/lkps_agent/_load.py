"""The load a worker reports: `LkpsAgentServer(load_fnc=...)` takes livekit-agents' own
`load_fnc`; this module holds the job-count alternative for shared hosts.

livekit-agents' default load is the whole machine's CPU use, averaged over 2.5 s. On a
host the worker shares (a CI runner, a node packed with other services) that number says
how busy the *neighbours* are: livekit-server stops offering jobs to a worker whose load
is at or above its `agents.target_load` (0.7), and LKPS answers `503 … is at capacity`
at `LKPS_LIVEKIT_AGENT_TARGET_LOAD` (the same 0.7), so an idle agent on a busy host
silently takes no sessions. `job_count_load` reports how many of its own jobs the worker
runs instead. See docs/agent-guide.md, "The load a worker reports".
"""

from __future__ import annotations

import math
from collections.abc import Callable

from livekit.agents import AgentServer

from lkps_agent._config import ConfigurationError

__all__ = ["DEFAULT_TARGET_LOAD", "FULL_LOAD", "job_count_load"]

# livekit-server's `agents.target_load` default, and LKPS's LKPS_LIVEKIT_AGENT_TARGET_LOAD.
DEFAULT_TARGET_LOAD = 0.7
# What a worker running all the jobs it may reports: above any target, and exact in the
# protocol's float32 (0.7 is not: it arrives as 0.699999988, just *under* a 0.7 target).
FULL_LOAD = 1.0


def job_count_load(
    max_jobs: int, *, target_load: float = DEFAULT_TARGET_LOAD
) -> Callable[[AgentServer], float]:
    """A `load_fnc` from the worker's own jobs: `target_load * running / max_jobs` while
    fewer than `max_jobs` run, `1.0` from `max_jobs` on.

    Scaled so that `max_jobs` means what it says: the load stays under the target (where
    livekit-server stops offering jobs and LKPS answers 503) while fewer than `max_jobs`
    jobs run, and reaches full exactly at `max_jobs`. Pass the target your livekit-server
    and LKPS use if it is not 0.7. The machine's CPU no longer counts: size `max_jobs` for
    what one worker can carry.
    """
    if isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 1:
        raise ConfigurationError(f"max_jobs must be a whole number of jobs >= 1, not {max_jobs!r}")
    if not (math.isfinite(target_load) and 0 < target_load <= 1):
        raise ConfigurationError(
            f"target_load must be in (0, 1], as livekit-server's agents.target_load, not "
            f"{target_load!r}"
        )

    def load(server: AgentServer) -> float:
        running = len(server.active_jobs)
        if running >= max_jobs:
            return FULL_LOAD
        return target_load * running / max_jobs

    load.__qualname__ = load.__name__ = f"job_count_load(max_jobs={max_jobs})"
    return load
