"""Fixtures for the LiveKit double's own tests: a fresh double per test, a
`livekit-api` client for it, and real `livekit-agents` workers run in-process."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from livekit import api
from livekit.agents import AgentServer, JobContext, JobExecutorType

from lkps_testkit.livekit import LiveKitDouble

Entrypoint = Callable[[JobContext], Awaitable[None]]
StartWorker = Callable[..., Awaitable[AgentServer]]
# Variables an AgentServer writes into os.environ when it runs; restored after each test.
_AGENT_ENVIRONMENT = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "SSL_CERT_FILE")


def _idle() -> float:
    return 0.0


@pytest.fixture
def livekit() -> Iterator[LiveKitDouble]:
    with LiveKitDouble() as double:
        yield double


@pytest.fixture
async def lkapi(livekit: LiveKitDouble) -> AsyncIterator[api.LiveKitAPI]:
    """The official server SDK, signed with the double's key like any backend."""
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as client:
        yield client


@pytest.fixture
def agent_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("LIVEKIT_AGENT_NAME", raising=False)
    monkeypatch.delenv("LIVEKIT_AGENT_NAME_OVERRIDE", raising=False)
    saved = {name: os.environ.get(name) for name in _AGENT_ENVIRONMENT}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
async def start_worker(
    livekit: LiveKitDouble, agent_environment: None
) -> AsyncIterator[StartWorker]:
    """`await start_worker("helper", entrypoint)`: a real livekit-agents worker in this
    event loop (jobs in threads), registered with the double when the call returns."""
    running: list[tuple[AgentServer, asyncio.Task[None], str]] = []

    async def start(agent_name: str, entrypoint: Entrypoint, **options: Any) -> AgentServer:
        # The shared machine's CPU load is not these tests' business: left alone, the SDK
        # reports itself full when the CPU is busy, and the double then (rightly) skips it.
        options.setdefault("load_fnc", _idle)
        options.setdefault("load_threshold", math.inf)
        server = AgentServer(
            ws_url=livekit.url,
            api_key=livekit.api_key,
            api_secret=livekit.api_secret,
            job_executor_type=JobExecutorType.THREAD,
            num_idle_processes=0,
            host="127.0.0.1",
            port=0,
            **options,
        )
        server.rtc_session(agent_name=agent_name)(entrypoint)
        running.append((server, asyncio.create_task(server.run()), agent_name))
        count = sum(1 for _, _, name in running if name == agent_name)
        await livekit.wait_for_workers_async(agent_name, count)
        return server

    yield start
    for server, task, _ in running:
        await server.aclose()
        await asyncio.wait_for(task, 10)
