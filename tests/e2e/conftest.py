"""The end-to-end stack against the LiveKit double: the double (a thread of this process),
LKPS (`lkps serve`, a process), the Entra double (threads: JWKS over http, token endpoint
over TLS), and the example agent built on lkps-agent (a process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lkps_testkit import EntraDouble, ServerThread, TlsFiles
from lkps_testkit.livekit import LiveKitDouble
from tests.backends import TestDatabase
from tests.browser import Browser, chromium_or_skip, headless_chromium
from tests.conftest import LIVEKIT_KEY, LIVEKIT_SECRET
from tests.e2e.harness import AgentProcess, LiveKitEndpoint, lkps_replica
from tests.processes import Replica


@dataclass
class Stack:
    """What a test drives; `start_lkps` and `start_agent` may be called again (a restart)."""

    livekit: LiveKitDouble
    entra: EntraDouble
    workdir: Path
    _lkps_factory: Callable[[], Replica]
    _agent_factory: Callable[[str, int, Mapping[str, str] | None], AgentProcess]
    lkps: Replica | None = None
    agents: list[AgentProcess] = field(default_factory=list)

    def start_lkps(self) -> Replica:
        self.lkps = self._lkps_factory().start()
        self.lkps.wait_ready()
        return self.lkps

    def start_agent(
        self, http_port: int = 0, load: Mapping[str, str] | None = None
    ) -> AgentProcess:
        """`load`: the example agent's load variables (AgentProcess)."""
        assert self.lkps is not None, "start LKPS first"
        agent = self._agent_factory(self.lkps.url, http_port, load).start()
        self.agents.append(agent)
        return agent

    @property
    def lkps_url(self) -> str:
        assert self.lkps is not None
        return self.lkps.url


StackFactory = Callable[..., Stack]


@pytest.fixture
def livekit_double() -> Iterator[LiveKitDouble]:
    with LiveKitDouble(api_key=LIVEKIT_KEY, api_secret=LIVEKIT_SECRET) as double:
        yield double


@pytest.fixture
def make_stack(
    livekit_double: LiveKitDouble,
    entra: EntraDouble,
    entra_server: ServerThread,
    entra_tls_server: ServerThread,
    tls: TlsFiles,
    database: TestDatabase,
    authz_file: Path,
    tmp_path: Path,
) -> Iterator[StackFactory]:
    """`make_stack(LKPS_X="…")`: the cast, with LKPS settings for this test; LKPS is
    started, the agent is not."""
    stacks: list[Stack] = []

    def make(**lkps_settings: str) -> Stack:
        livekit = LiveKitEndpoint(livekit_double.url, LIVEKIT_KEY, LIVEKIT_SECRET)
        port: dict[str, str] = {}
        starts = iter(range(1, 100))

        def new_lkps() -> Replica:
            # A restarted LKPS keeps its port and database: the same service, back.
            replica = lkps_replica(
                tmp_path,
                entra=entra,
                jwks_url=entra.jwks_url(entra_server.url),
                database_url=database.url,
                authz_file=authz_file,
                livekit=livekit,
                name=f"lkps-{next(starts)}",
                **(lkps_settings | port),
            )
            port["LKPS_PORT"] = str(replica.port)
            return replica

        def new_agent(
            lkps_url: str, http_port: int, load: Mapping[str, str] | None
        ) -> AgentProcess:
            return AgentProcess(
                tmp_path,
                lkps_url=lkps_url,
                entra=entra,
                authority=entra_tls_server.url,
                ca_bundle=tls.ca_cert,
                http_port=http_port,
                load=load,
            )

        stack = Stack(livekit_double, entra, tmp_path, new_lkps, new_agent)
        stacks.append(stack)
        stack.start_lkps()
        return stack

    yield make
    for stack in stacks:
        for agent in stack.agents:
            agent.stop()
        if stack.lkps is not None:
            stack.lkps.stop()


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """A headless Chromium (scripts/services installs it), shared by the browser tests."""
    executable = chromium_or_skip()
    with headless_chromium(executable, tmp_path_factory.mktemp("browser")) as started:
        yield started
