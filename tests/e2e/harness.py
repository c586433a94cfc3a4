"""The end-to-end cast as real processes on 127.0.0.1: LKPS (`lkps serve`, a `Replica`),
and the example agent (examples/agent/agent.py on lkps-agent) with its Entra identity.

Used by tests/e2e (against the LiveKit double) and tests/realserver (against a real
livekit-server): the same agent, the same LKPS, only the LiveKit differs.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from lkps_client import AgentNotConnectedError, LkpsClient, Session
from lkps_testkit import EntraDouble
from tests.conftest import AGENT, API_AUDIENCE, CLIENT_A
from tests.processes import ManagedProcess, Replica, serve_environment

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_AGENT = ROOT / "examples" / "agent" / "agent.py"
AGENT_SECRET = "example-agent-client-secret"  # its app registration's secret in the double
SCOPE = f"{API_AUDIENCE}/.default"
T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.1
) -> T:
    """Poll `condition` until it returns something truthy; fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(every)


@dataclass(frozen=True)
class LiveKitEndpoint:
    """The LiveKit LKPS hands out, and the key pair it signs with."""

    url: str
    api_key: str
    api_secret: str


def lkps_replica(
    workdir: Path,
    *,
    entra: EntraDouble,
    jwks_url: str,
    database_url: str,
    authz_file: Path,
    livekit: LiveKitEndpoint,
    name: str = "lkps",
    **settings: str,
) -> Replica:
    env = serve_environment(
        tenant_id=entra.tenant_id,
        audience=API_AUDIENCE,
        jwks_url=jwks_url,
        database_url=database_url,
        livekit_key=livekit.api_key,
        livekit_secret=livekit.api_secret,
        authz_file=authz_file,
        **({"LKPS_LIVEKIT_URL": livekit.url} | settings),
    )
    return Replica(name, env, workdir)


class AgentProcess(ManagedProcess):
    """examples/agent/agent.py `start`, with an Entra client secret, as its own process."""

    def __init__(
        self,
        workdir: Path,
        *,
        lkps_url: str,
        entra: EntraDouble,
        authority: str,
        ca_bundle: Path,
        http_port: int = 0,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        """`http_port`: the worker's health endpoint (AGENT_HTTP_PORT); 0, the default,
        lets the OS pick a free one, so agents never collide with each other or with
        whatever else listens on livekit-agents' 8081."""
        entra.client_secrets[AGENT] = AGENT_SECRET
        env = (
            {
                key: value
                for key, value in os.environ.items()
                # No static LiveKit credential, no LKPS setting of the test runner.
                if not key.startswith(("LIVEKIT_", "LKPS_", "AZURE_"))
            }
            | {
                "LKPS_URL": lkps_url,
                "LKPS_SCOPE": SCOPE,
                "LKPS_AUTH": "secret",
                "LKPS_CA_BUNDLE": str(ca_bundle),
                "LKPS_ENFORCE_CLIENT_AUTHZ": "true",
                "LKPS_AGENT_VERSION": "e2e",
                "AZURE_TENANT_ID": entra.tenant_id,
                "AZURE_CLIENT_ID": AGENT,
                "AZURE_CLIENT_SECRET": AGENT_SECRET,
                "AZURE_AUTHORITY_HOST": authority,
                "PYTHONUNBUFFERED": "1",
                # The test machine is shared: CPU load must not mark the worker full.
                "AGENT_LOAD_THRESHOLD": "inf",
                "AGENT_HTTP_PORT": str(http_port),
                # Nor may it make livekit-server skip the worker (it does at a load >= 0.7).
                "AGENT_FIXED_LOAD": "0.05",
            }
            | dict(extra_env or {})
        )
        command = [sys.executable, str(EXAMPLE_AGENT), "start", "--log-level", "DEBUG"]
        super().__init__("agent", command, env, workdir)
        self.report_dir = workdir / "agent-reports"
        self.report_dir.mkdir(parents=True, exist_ok=True)
        self.env["LKPS_EXAMPLE_REPORT_DIR"] = str(self.report_dir)

    def start(self) -> AgentProcess:
        super().start()
        return self

    def log_count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log_text()))

    def reports(self) -> list[dict[str, Any]]:
        """What the entrypoint received, one per job it ran."""
        return [json.loads(path.read_text()) for path in sorted(self.report_dir.glob("*.json"))]


@contextmanager
def running_agent(**options: Any) -> Iterator[AgentProcess]:
    agent = AgentProcess(**options).start()
    try:
        yield agent
    finally:
        agent.stop()


def user_token(entra: EntraDouble, username: str = "alice") -> str:
    return entra.user_token(audience=API_AUDIENCE, client_app_id=CLIENT_A, username=username)


def start_session(lkps_url: str, entra: EntraDouble, metadata: dict[str, Any]) -> Session:
    with LkpsClient(lkps_url, token=user_token(entra)) as client:
        return client.start_session(AGENT, metadata=metadata)


def session_when_present(
    lkps_url: str, entra: EntraDouble, metadata: dict[str, Any], *, timeout: float = 90
) -> Session:
    """A session with AGENT as soon as LKPS knows it is connected (404 until then)."""

    def attempt() -> Session | None:
        try:
            return start_session(lkps_url, entra, metadata)
        except AgentNotConnectedError:
            return None

    return wait_for(attempt, timeout=timeout, what="the agent registering with LKPS", every=0.5)


def session_status(lkps_url: str, entra: EntraDouble) -> int:
    """The status of a session start with AGENT (200, or 404 when it is not connected)."""
    response = httpx.post(
        f"{lkps_url}/api/session/start",
        json={"agent_entra_app_id": AGENT},
        headers={"Authorization": f"Bearer {user_token(entra)}"},
        timeout=10,
    )
    return response.status_code
