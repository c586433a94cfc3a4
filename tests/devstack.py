"""The newcomer's stack as processes: `lkps dev` with a real livekit-server beside it
(free ports), and `lkps dev agent` running the example agent against it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from lkps.cli.dev import DEV_AGENT_ID
from tests.processes import (
    LKPS,
    ManagedProcess,
    answers_200,
    clean_environment,
    free_port,
    wait_until_ready,
)
from tests.realserver.conftest import find_binary

T = TypeVar("T")
LIVEKIT_LINE = re.compile(r"^  LiveKit +(ws://127\.0\.0\.1:(\d+)) ", re.MULTILINE)
READY_TIMEOUT = 120.0  # lkps and livekit-server starting together on a busy 2-core machine
AGENT_JOIN_TIMEOUT = 300.0


@dataclass
class DevStack:
    """A running `lkps dev` and its livekit-server."""

    process: ManagedProcess
    url: str
    livekit_url: str
    env: dict[str, str]
    workdir: Path

    def agent(self, *args: str, log_name: str = "dev-agent", **env: str) -> ManagedProcess:
        """`lkps dev agent ARGS --url <this instance>` (not started), its log beside ours
        (`<log_name>.log`: one per agent when tests share the stack). The agent reports a
        fixed low load: a busy shared machine would otherwise make livekit-server stop
        dispatching to it."""
        return ManagedProcess(
            log_name,
            [*LKPS, "dev", "agent", *args, "--url", self.url],
            env={**self.env, "AGENT_FIXED_LOAD": "0.1", **env},
            workdir=self.workdir,
        )


@contextmanager
def dev_stack(workdir: Path, **env: str) -> Iterator[DevStack]:
    """`lkps dev --port <free> --livekit-port 0` in `workdir` with the real livekit-server
    (skipped without one, as tests/realserver), until both answer."""
    binary = find_binary()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # An agent's first job waits for a process of its own to start, which on a busy 2-core
    # machine can outlast the 10 s after which LKPS re-dispatches: two agents would join.
    environment = clean_environment(
        LKPS_LIVEKIT_SERVER_BIN=str(binary),
        LKPS_AGENT_JOIN_TIMEOUT_SECONDS=str(AGENT_JOIN_TIMEOUT),
        **env,
    )
    process = ManagedProcess(
        "lkps-dev",
        [*LKPS, "dev", "--port", str(port), "--livekit-port", "0"],
        env=environment,
        workdir=workdir,
    ).start()
    try:
        wait_until_ready(
            lambda: (
                answers_200(f"{url}/api/health/ready", timeout=1)
                and LIVEKIT_LINE.search(process.log_text()) is not None
            ),
            running=lambda: process.running,
            what="lkps dev",
            timeout=READY_TIMEOUT,
            log=process.log_text,
        )
        found = LIVEKIT_LINE.search(process.log_text())
        assert found is not None
        livekit_http = f"http://127.0.0.1:{found.group(2)}"
        wait_until_ready(
            lambda: answers_200(livekit_http, timeout=1),
            running=lambda: process.running,
            what="livekit-server",
            timeout=READY_TIMEOUT,
            log=process.log_text,
        )
        yield DevStack(process, url, found.group(1), environment, workdir)
    finally:
        process.stop()


def session_when_present(
    url: str, user_token: str, agent: str = DEV_AGENT_ID, *, timeout: float = 120
) -> dict[str, str]:
    """POST /api/session/start until the agent is present (404 until then)."""

    def attempt() -> dict[str, str] | None:
        answer = httpx.post(
            f"{url}/api/session/start",
            headers={"Authorization": f"Bearer {user_token}"},
            json={"agent_entra_app_id": agent, "metadata": {"from": "test"}},
            timeout=10,
        )
        if answer.status_code == 404:
            return None
        assert answer.status_code == 200, answer.text
        session: dict[str, str] = answer.json()
        return session

    return poll(attempt, timeout=timeout, what=f"agent {agent} present in LKPS")


def poll(attempt: Callable[[], T | None], *, timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = attempt()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.5)
