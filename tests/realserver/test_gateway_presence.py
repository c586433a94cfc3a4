"""Presence and capacity from the live gateway connection, against a real livekit-server
(issue 11, findings 1 and 2): the example agent (lkps-agent, its own process) connects
through `lkps serve` in gateway mode.

- `kill -9` of the agent: session starts answer 404 within 2 s (the heartbeat TTL kept
  them at 200 for 61 s before).
- A worker reporting load 1.0: 503 `… is at capacity` (livekit-server would offer the
  job to nobody and drop it); load back under the target: 200, and the agent joins.

The worker's load is the number in a file (the example agent's test-only
AGENT_LOAD_FILE), so it is the test's, never the machine's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from livekit import rtc

from lkps_testkit import EntraDouble, ServerThread, TlsFiles
from tests.backends import TestDatabase
from tests.conftest import AGENT
from tests.e2e.harness import (
    AgentProcess,
    LiveKitEndpoint,
    lkps_replica,
    running_agent,
    session_when_present,
    user_token,
    wait_for,
)
from tests.processes import Replica
from tests.realserver.conftest import RealLiveKit

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.backends("sqlite"),
    pytest.mark.usefixtures("livekit_agents_port_taken"),
]

TOPIC = "lkps.example"
AT_CAPACITY = f"Agent with app ID '{AGENT}' is at capacity"


def start(
    lkps_url: str, entra: EntraDouble, metadata: dict[str, Any] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{lkps_url}/api/session/start",
        json={"agent_entra_app_id": AGENT, "metadata": metadata or {}},
        headers={"Authorization": f"Bearer {user_token(entra)}"},
        timeout=10,
    )


def answered(
    lkps_url: str, entra: EntraDouble, status: int, metadata: dict[str, Any]
) -> httpx.Response:
    """The first session start answered `status`; the worker reports every 2.5 s."""

    def attempt() -> httpx.Response | None:
        response = start(lkps_url, entra, metadata)
        return response if response.status_code == status else None

    return wait_for(attempt, timeout=30, what=f"a {status} to session start", every=0.2)


@contextmanager
def gateway_stack(
    livekit_server: RealLiveKit,
    entra: EntraDouble,
    entra_server: ServerThread,
    entra_tls_server: ServerThread,
    tls: TlsFiles,
    database: TestDatabase,
    authz_file: Path,
    workdir: Path,
    load_file: Path,
) -> Iterator[tuple[Replica, AgentProcess]]:
    livekit = LiveKitEndpoint(livekit_server.url, livekit_server.api_key, livekit_server.api_secret)
    lkps = lkps_replica(
        workdir,
        entra=entra,
        jwks_url=entra.jwks_url(entra_server.url),
        database_url=database.url,
        authz_file=authz_file,
        livekit=livekit,
        LKPS_AGENT_CONNECTION="gateway",
    ).start()
    try:
        lkps.wait_ready()
        with running_agent(
            workdir=workdir,
            lkps_url=lkps.url,
            entra=entra,
            authority=entra_tls_server.url,
            ca_bundle=tls.ca_cert,
            load={"AGENT_FIXED_LOAD": "0.05", "AGENT_LOAD_FILE": str(load_file)},
        ) as example:
            yield lkps, example
    finally:
        lkps.stop()


@pytest.fixture
def stack(
    livekit_server: RealLiveKit,
    entra: EntraDouble,
    entra_server: ServerThread,
    entra_tls_server: ServerThread,
    tls: TlsFiles,
    database: TestDatabase,
    authz_file: Path,
    tmp_path: Path,
) -> Iterator[tuple[Replica, AgentProcess, Path]]:
    load_file = tmp_path / "agent-load"
    load_file.write_text("0.05")
    with gateway_stack(
        livekit_server, entra, entra_server, entra_tls_server, tls, database, authz_file,
        tmp_path, load_file,
    ) as (lkps, example):  # fmt: skip
        yield lkps, example, load_file


def test_kill_9_of_the_agent_is_a_404_within_2_s(
    stack: tuple[Replica, AgentProcess, Path], entra: EntraDouble
) -> None:
    lkps, example, _ = stack
    session_when_present(lkps.url, entra, {"before": "kill"})
    example.kill()  # SIGKILL, the whole process group
    killed = time.monotonic()
    wait_for(
        lambda: start(lkps.url, entra).status_code == 404,
        timeout=2,
        what="a 404 after kill -9 of the agent",
        every=0.05,
    )
    print(f"\n404 {time.monotonic() - killed:.2f} s after kill -9")
    response = start(lkps.url, entra)
    assert response.json()["message"] == f"Agent with app ID '{AGENT}' is not connected"


async def test_a_full_worker_is_503_then_200_and_the_agent_joins(
    stack: tuple[Replica, AgentProcess, Path], entra: EntraDouble, livekit_server: RealLiveKit
) -> None:
    lkps, example, load_file = stack
    await asyncio.to_thread(session_when_present, lkps.url, entra, {"warm": "up"})

    load_file.write_text("1.0")
    full = await asyncio.to_thread(answered, lkps.url, entra, 503, {})
    assert full.json()["message"] == AT_CAPACITY
    assert int(full.headers["Retry-After"]) > 0

    load_file.write_text("0.1")
    metadata = {"after": "capacity"}
    granted = await asyncio.to_thread(answered, lkps.url, entra, 200, metadata)
    session = granted.json()
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    room = rtc.Room()

    @room.on("data_received")
    def on_data(packet: rtc.DataPacket) -> None:
        if packet.topic == TOPIC:
            received.put_nowait(json.loads(packet.data))

    await asyncio.wait_for(room.connect(session["livekit_url"], session["participant_token"]), 20)
    try:
        greeting = await asyncio.wait_for(received.get(), 60)
        assert greeting == {"greeting": f"hello from {AGENT}", "metadata": metadata}
    finally:
        await room.disconnect()
        await livekit_server.end_room(session["room_name"])  # the agent stopped next drains no job
    assert example.running
