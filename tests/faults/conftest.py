"""Fixtures of the fault and scale-out tests: `lkps serve` replicas as real processes on
127.0.0.1, against PostgreSQL (a fresh database of the shared server per test, or a
private cluster a test may stop), with the Entra double signing every token."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from lkps.authorization.file import write_authorization_file
from lkps_testkit import EntraDouble, GraphDouble, ServerThread, TlsFiles
from lkps_testkit.entra import GRAPH_RESOURCE
from tests.backends import services_required
from tests.conftest import (
    AGENT,
    AGENT_2,
    API_AUDIENCE,
    CLIENT_A,
    LIVEKIT_KEY,
    LIVEKIT_SECRET,
    LKPS_CLIENT_ID,
)
from tests.faults.postgres import PrivatePostgres, private_cluster_unavailable
from tests.processes import serve_environment

EnvFactory = Callable[..., dict[str, str]]


@dataclass(frozen=True)
class Identities:
    """Entra tokens for the test's callers (fresh ones: each has its own random claims)."""

    entra: EntraDouble

    def user(self, n: int = 0, *, client: str = CLIENT_A) -> str:
        return self.entra.user_token(
            audience=API_AUDIENCE, client_app_id=client, username=f"user{n}"
        )

    def users(self, count: int) -> list[str]:
        return [self.user(n) for n in range(count)]

    def agent(self, agent: str = AGENT) -> str:
        return self.entra.app_token(audience=API_AUDIENCE, client_app_id=agent)


@pytest.fixture
def identities(entra: EntraDouble) -> Identities:
    return Identities(entra)


# Both agents pre-authorize CLIENT_A.
BOTH_AGENTS = {AGENT: [CLIENT_A], AGENT_2: [CLIENT_A]}


def replica_environment(
    entra: EntraDouble,
    entra_server: ServerThread,
    database_url: str,
    authz_file: Path,
    **overrides: str,
) -> dict[str, str]:
    """One replica's environment, on a port of its own, trusting `entra`."""
    return serve_environment(
        tenant_id=entra.tenant_id,
        audience=API_AUDIENCE,
        jwks_url=entra.jwks_url(entra_server.url),
        database_url=database_url,
        livekit_key=LIVEKIT_KEY,
        livekit_secret=LIVEKIT_SECRET,
        authz_file=authz_file,
        **overrides,
    )


@pytest.fixture
def both_agents_authz(tmp_path: Path) -> Path:
    path = tmp_path / "authz-faults.json"
    write_authorization_file(path, BOTH_AGENTS)
    return path


@pytest.fixture
def lkps_env(entra: EntraDouble, entra_server: ServerThread, both_agents_authz: Path) -> EnvFactory:
    """`lkps_env(database_url, LKPS_X=...)`: one replica's environment (see
    `replica_environment`), with `BOTH_AGENTS` authorized."""

    def make(database_url: str, **overrides: str) -> dict[str, str]:
        return replica_environment(
            entra, entra_server, database_url, both_agents_authz, **overrides
        )

    return make


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this test's own, started; removed afterwards."""
    if reason := private_cluster_unavailable():
        message = f"cannot make a private PostgreSQL cluster: {reason}"
        if services_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    cluster = PrivatePostgres()
    try:
        cluster.init().start()
        yield cluster
    finally:
        cluster.remove()


@dataclass
class BearerRecorder:
    """ASGI middleware noting every bearer token a server receives (LKPS's own Graph
    tokens, which the test never sees otherwise but must not find in a log either)."""

    app: ASGIApp
    tokens: set[str] = field(default_factory=set)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value.lower().startswith(b"bearer "):
                self.tokens.add(value[7:].decode("latin-1").strip())
        await self.app(scope, receive, send)


@dataclass
class GraphBacked:
    """A Graph double (behind a token recorder) that LKPS reads pre-authorizations from,
    with LKPS's own app registration and client secret known to the Entra double."""

    graph: GraphDouble
    recorder: BearerRecorder
    client_secret: str
    make_env: Callable[..., dict[str, str]]

    def env(self, database_url: str, **overrides: str) -> dict[str, str]:
        return self.make_env(database_url, **overrides)

    @property
    def secrets(self) -> list[str]:
        """What LKPS holds or obtained that no log may show."""
        return [LIVEKIT_SECRET, self.client_secret, *self.recorder.tokens]


@pytest.fixture
def graph_backed(
    entra: EntraDouble, entra_tls_server: ServerThread, tls: TlsFiles, lkps_env: EnvFactory
) -> Iterator[GraphBacked]:
    client_secret = secrets.token_urlsafe(32)
    entra.client_secrets[LKPS_CLIENT_ID] = client_secret
    entra.app_role_assignments[(LKPS_CLIENT_ID, GRAPH_RESOURCE)] = ["Application.Read.All"]
    graph = GraphDouble(entra)
    recorder = BearerRecorder(graph.asgi_app())
    try:
        with ServerThread(recorder) as graph_server:

            def make(database_url: str, **overrides: str) -> dict[str, str]:
                env = lkps_env(
                    database_url,
                    LKPS_AUTHZ_SOURCE="graph",
                    LKPS_ENTRA_CLIENT_ID=LKPS_CLIENT_ID,
                    LKPS_ENTRA_CLIENT_SECRET=client_secret,
                    LKPS_ENTRA_AUTHORITY=entra_tls_server.url,
                    LKPS_GRAPH_URL=graph_server.url,
                    LKPS_TLS_CA_BUNDLE=str(tls.ca_cert),
                    **overrides,
                )
                env.pop("LKPS_AUTHZ_FILE")
                return env

            yield GraphBacked(graph, recorder, client_secret, make)
    finally:
        entra.client_secrets.pop(LKPS_CLIENT_ID, None)
        entra.app_role_assignments.pop((LKPS_CLIENT_ID, GRAPH_RESOURCE), None)
