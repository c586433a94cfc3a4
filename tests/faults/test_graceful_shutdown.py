"""SIGTERM with requests in flight: `lkps serve` stops accepting connections at once,
finishes every request it has (each with its audit record), writes what is queued and
exits by itself, leaving an intact chain.

The requests are slow for a legitimate reason: each is for an agent whose
pre-authorized clients LKPS has not cached yet, and Microsoft Graph (the double) takes a
second to answer.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.backends import TestDatabase
from tests.conftest import CLIENT_A
from tests.faults.conftest import GraphBacked, Identities
from tests.faults.logs import assert_clean, check_logs
from tests.faults.traffic import (
    REGISTER,
    SESSION_START,
    Traffic,
    answered_records,
    granted_sessions_without_record,
    http_client,
    read_audit,
    rejections_recorded,
)
from tests.processes import replicas, run_lkps

pytestmark = [pytest.mark.e2e, pytest.mark.backends("postgresql")]

IN_FLIGHT = 6
GRAPH_DELAY = 1.0
EXIT_BOUND = 10.0  # seconds from SIGTERM to the process's end


def refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        return False


async def test_sigterm_finishes_requests_in_flight(
    database: TestDatabase,
    graph_backed: GraphBacked,
    identities: Identities,
    tmp_path: Path,
) -> None:
    agents = [str(uuid.uuid4()) for _ in range(IN_FLIGHT)]
    for agent in agents:
        graph_backed.graph.applications[agent] = [CLIENT_A]
    env = graph_backed.env(database.url)
    traffic = Traffic()
    with replicas({"lkps": env}, tmp_path) as running:
        lkps = running["lkps"]
        async with http_client() as http:
            for agent in agents:
                token = identities.agent(agent)
                registered = await traffic.post(
                    http, lkps, REGISTER, token, {"enforce_client_authz": True}
                )
                assert registered.status == 200, registered.body
            graph_backed.graph.delay = GRAPH_DELAY
            in_flight = [
                asyncio.create_task(
                    traffic.post(
                        http, lkps, SESSION_START, identities.user(n), {"agent_entra_app_id": agent}
                    )
                )
                for n, agent in enumerate(agents)
            ]
            # Every one of them is inside LKPS, waiting on Graph.
            deadline = time.monotonic() + 10
            while len(graph_backed.graph.requests_by_app) < IN_FLIGHT:
                assert time.monotonic() < deadline, graph_backed.graph.requests_by_app
                await asyncio.sleep(0.01)
            terminated_at = time.monotonic()
            lkps.terminate()
            # The listening socket closes while those requests are still running.
            while not await asyncio.to_thread(refuses_connections, lkps.port):
                assert time.monotonic() - terminated_at < 2.0, "still accepting after SIGTERM"
                await asyncio.sleep(0.02)
            refused_at = time.monotonic()
            late = await traffic.post(
                http, lkps, SESSION_START, identities.user(99), {"agent_entra_app_id": agents[0]}
            )
            finished = await asyncio.gather(*in_flight)
        returncode = await asyncio.to_thread(lkps.wait, EXIT_BOUND)
        exited_in = time.monotonic() - terminated_at
        log = lkps.log_text()

    # Refused before any request in flight had finished: shutdown had begun around them.
    assert all(e.done_at > refused_at for e in finished), (refused_at, finished)
    assert Counter(e.status for e in finished) == {200: IN_FLIGHT}, [e.body for e in finished]
    assert late.status is None and late.error == httpx.ConnectError.__name__, late
    # It ended by itself, with status 0, after the application shutdown completed.
    assert returncode == 0, returncode
    assert exited_in < EXIT_BOUND
    assert "Application shutdown complete." in log
    assert "Finished server process" in log

    records = await read_audit(database.url)
    assert granted_sessions_without_record(traffic, records) == []
    audited = [e for e in traffic.exchanges if e.audited]
    answered = answered_records(records)
    assert len(answered) == len(audited) == 2 * IN_FLIGHT
    assert {r.request_id for r in answered} == traffic.request_ids(audited)
    assert rejections_recorded(traffic, records) == []
    verified = run_lkps("audit", "verify", env=env, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert (
        verified.stdout.strip()
        == f"audit chain intact: {len(records)} records, head at {len(records)}"
    )

    report = check_logs({"lkps": log}, traffic, graph_backed.secrets)
    assert_clean(report)
    took = [e.done_at - e.sent_at for e in finished]
    print(
        f"\n[sigterm] {IN_FLIGHT} session starts in flight ({min(took):.1f}-{max(took):.1f} s "
        f"each) -> {dict(Counter(e.status for e in finished))}; new connections refused "
        f"{refused_at - terminated_at:.2f} s after SIGTERM; exit status {returncode} after "
        f"{exited_in:.1f} s; audit records {len(records)}; {verified.stdout.strip()}; "
        f"{report.summary()}"
    )
