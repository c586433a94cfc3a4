"""`run_app(server)`: livekit-agents' `cli.run_app`, with an exit status that says whether
the agent ran.

livekit-agents' CLI catches whatever stops the worker, logs "worker failed" and exits 0,
so a process manager (systemd, Kubernetes, a shell's `&&`) cannot tell an agent that could
not start (its HTTP port taken, LKPS refusing the registration) from one that was asked to
stop. `run_app` runs the same CLI, then exits 1 with one line on stderr saying what
stopped the agent.
"""

from __future__ import annotations

import errno
import sys

from livekit.agents import cli

from lkps_agent._errors import LkpsAgentError
from lkps_agent._server import LkpsAgentServer

__all__ = ["describe_failure", "run_app"]


def run_app(server: LkpsAgentServer) -> None:
    """`cli.run_app(server)` (start, dev, console, …), exiting 1 if the worker failed."""
    try:
        cli.run_app(server)
    except SystemExit:
        if server.lkps_failure is None:
            raise
    failure = server.lkps_failure
    if failure is not None:
        print(f"lkps-agent: {describe_failure(failure)}", file=sys.stderr, flush=True)
        raise SystemExit(1)


def describe_failure(error: BaseException) -> str:
    """One line: what stopped the agent, and for the usual causes what to change."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
        return (
            f"the agent could not start: {text} (the worker's HTTP port is in use: pass "
            "LkpsAgentServer(port=...) another one, 0 for any free port)"
        )
    if isinstance(error, LkpsAgentError):
        return f"the agent stopped: {text}"
    return f"the agent stopped: {type(error).__name__}: {text}"
