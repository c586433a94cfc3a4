"""`lkps agents` in gateway mode: each agent's connected workers, under the agent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from livekit.protocol import agent

from lkps.config import Settings
from tests.api.test_gateway_presence import Instance, eventually, livekit, serving
from tests.conftest import AGENT, API_AUDIENCE, CLIENT_B, FakeClock
from tests.processes import clean_environment, run_lkps

pytestmark = [pytest.mark.cli, pytest.mark.backends("sqlite")]

__all__ = ["livekit"]  # the fixture, used by name


async def test_agents_shows_connected_workers(
    settings_values: dict[str, Any], livekit: Any, entra: Any, clock: FakeClock, tmp_path: Path
) -> None:
    settings = Settings(
        **(settings_values | {"livekit_url": livekit.url, "agent_connection": "gateway"})
    )
    admin = entra.user_token(
        audience=API_AUDIENCE, client_app_id=CLIENT_B, username="ops", roles=["LKPS.Admin"]
    )
    with serving(settings, clock, entra, livekit) as lkps:
        env = clean_environment(LKPS_URL=lkps.url, LKPS_TOKEN=admin)
        registration = lkps.register()
        async with lkps.worker(registration) as worker:
            await worker.send(
                agent.WorkerMessage(
                    update_worker=agent.UpdateWorkerStatus(
                        load=0.8, status=agent.WS_AVAILABLE, job_count=2
                    )
                )
            )
            await eventually(lambda: _reported(lkps), "the status reaching the store")
            table = await asyncio.to_thread(run_lkps, "agents", env=env, cwd=tmp_path)
            listed = await asyncio.to_thread(run_lkps, "agents", "--json", env=env, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    replica = lkps.services.connections.replica_id  # type: ignore[union-attr]
    agent_line, worker_line = table.stdout.splitlines()[1:3]
    assert agent_line.startswith(AGENT) and " yes " in agent_line
    assert worker_line.startswith(f"  worker {worker.worker_id}  replica {replica}  since ")
    assert worker_line.endswith("  full  load 0.80  jobs 2")
    [shown] = json.loads(listed.stdout)[0]["workers"]
    assert shown["replica_id"] == replica and shown["status"] == "full"
    assert shown["job_count"] == 2 and shown["registration_id"] == registration["registration_id"]


def _reported(lkps: Instance) -> bool:
    return bool(lkps.agents()[AGENT]["workers"][0]["job_count"] == 2)
