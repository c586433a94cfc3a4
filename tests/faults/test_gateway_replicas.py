"""Gateway presence across replicas (issue 11): three `lkps serve` replicas in gateway mode
on one PostgreSQL database, workers spread over them, one replica SIGKILLed while session
starts keep coming through the others. No session is granted for an agent without a
live worker beyond the 10 s bound (the replica lease, LKPS_AGENT_GATEWAY_LEASE_SECONDS),
and an agent with a worker on a surviving replica is never refused."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from lkps_testkit import EntraDouble
from lkps_testkit.livekit import LiveKitDouble
from tests.backends import TestDatabase
from tests.conftest import AGENT, AGENT_2, API_AUDIENCE, CLIENT_A, LIVEKIT_KEY, LIVEKIT_SECRET
from tests.faults.conftest import EnvFactory
from tests.livekit_double.fake_worker import FakeWorker
from tests.processes import replicas

pytestmark = [pytest.mark.e2e, pytest.mark.backends("postgresql")]

BOUND = 10.0
WATCH = 14.0  # how long after the kill session starts are watched
WATCH_AT_MOST = 60.0


def register(url: str, entra: EntraDouble, agent_id: str) -> dict[str, Any]:
    token = entra.app_token(audience=API_AUDIENCE, client_app_id=agent_id)
    response = httpx.post(
        f"{url}/api/agent/register",
        json={"enforce_client_authz": False},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def start(client: httpx.AsyncClient, url: str, token: str, agent_id: str) -> int:
    response = await client.post(
        f"{url}/api/session/start", json={"agent_entra_app_id": agent_id},
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    return response.status_code


async def test_a_killed_replicas_workers_stop_counting_within_10_s(
    lkps_env: EnvFactory, database: TestDatabase, entra: EntraDouble, tmp_path: Path
) -> None:
    with LiveKitDouble(api_key=LIVEKIT_KEY, api_secret=LIVEKIT_SECRET) as livekit:
        # These hand-made workers never heartbeat: their registrations must outlive the
        # test on a slow machine (a lapsed registration's socket is closed).
        env = {
            "LKPS_AGENT_CONNECTION": "gateway",
            "LKPS_LIVEKIT_URL": livekit.url,
            "LKPS_PRESENCE_TTL": "3600",
        }
        envs = {name: lkps_env(database.url, **env) for name in ("r1", "r2", "r3")}
        with replicas(envs, tmp_path) as fleet:
            urls = {name: replica.url for name, replica in fleet.items()}
            # AGENT's only worker is on r1; AGENT_2 has one on r2 and one on r3.
            workers = [
                FakeWorker(livekit, register(urls["r1"], entra, AGENT)["token"],
                           agent_name=AGENT, url=urls["r1"]),
                FakeWorker(livekit, register(urls["r2"], entra, AGENT_2)["token"],
                           agent_name=AGENT_2, url=urls["r2"]),
                FakeWorker(livekit, register(urls["r3"], entra, AGENT_2)["token"],
                           agent_name=AGENT_2, url=urls["r3"]),
            ]  # fmt: skip
            token = entra.user_token(audience=API_AUDIENCE, client_app_id=CLIENT_A)
            try:
                for worker in workers:
                    await worker.connect()
                async with httpx.AsyncClient(timeout=10) as client:
                    for url in (urls["r2"], urls["r3"]):
                        assert await start(client, url, token, AGENT) == 200
                        assert await start(client, url, token, AGENT_2) == 200

                    fleet["r1"].kill()  # SIGKILL: no row deleted, no lease renewed
                    killed = time.monotonic()
                    answers: list[tuple[float, str, int]] = []

                    def watching(now: float, agent_id: str) -> bool:
                        # Past WATCH, on until each agent has answers from beyond the
                        # bound: on a busy machine one request may take seconds.
                        seen = sum(1 for t, a, _ in answers if a == agent_id and t > BOUND)
                        return now < WATCH or (seen < 3 and now < WATCH_AT_MOST)

                    async def starter(url: str, agent_id: str) -> None:
                        while watching(now := time.monotonic() - killed, agent_id):
                            answers.append(
                                (now, agent_id, await start(client, url, token, agent_id))
                            )

                    await asyncio.gather(
                        *(starter(url, agent_id)
                          for url in (urls["r2"], urls["r3"]) for agent_id in (AGENT, AGENT_2))
                    )  # fmt: skip
            finally:
                for worker in workers:
                    await worker.close()

    late = [(t, status) for t, agent_id, status in answers if agent_id == AGENT and t > BOUND]
    granted_late = [t for t, status in late if status == 200]
    assert late and not granted_late, f"granted {len(granted_late)} sessions after {BOUND} s"
    assert {status for t, status in late} == {404}
    stopped = min(t for t, agent_id, status in answers if agent_id == AGENT and status == 404)
    print(f"\n{len(answers)} session starts; AGENT's first 404 {stopped:.1f} s after the kill")
    # An agent with live workers on surviving replicas was never refused.
    assert {status for _, agent_id, status in answers if agent_id == AGENT_2} == {200}
