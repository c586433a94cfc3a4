"""Shared fixtures: a real Entra double on 127.0.0.1, a migrated store per test (SQLite
and PostgreSQL: every test that reaches the store runs on both), and LKPS itself with its
lifespan running, driven through httpx."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from livekit.api import TokenVerifier

from lkps.app import create_app
from lkps.audit import AuditRecord
from lkps.authorization.file import write_authorization_file
from lkps.config import Settings
from lkps.services import Services
from lkps.store.migrate import upgrade
from lkps_testkit import EntraDouble, ServerThread, SigningKey, TlsFiles, generate_tls_files
from tests.audit_keys import new_audit_key, write_signing_key
from tests.backends import (
    Backend,
    PostgresServer,
    RedisTarget,
    StoreSql,
    TestDatabase,
    display_redis_url,
    iter_backends,
    postgres_admin_url,
    redis_test_url,
    redis_unreachable,
    service_missing,
    unique_name,
)
from tests.categories import CATEGORIES, uncategorized
from tests.processes import LIVEKIT_AGENTS_HTTP_PORT, listening

API_AUDIENCE = "api://livekit-platform-service-test.example.com"
LKPS_CLIENT_ID = "5c1f3d9e-0a7b-4c2d-9e8f-112233445566"
LIVEKIT_URL = "wss://livekit.test.example"
LIVEKIT_KEY = "APItestkey"
LIVEKIT_SECRET = "a-test-secret-that-is-comfortably-longer-than-32-chars"
CLIENT_A = "11111111-1111-4111-8111-111111111111"  # pre-authorized for AGENT
CLIENT_B = "22222222-2222-4222-8222-222222222222"  # pre-authorized for nothing
AGENT = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
AGENT_2 = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"


class FakeClock:
    """Wall time that moves only when a test says so."""

    def __init__(self) -> None:
        self._now = datetime.now(UTC)
        self._monotonic = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds


@pytest.fixture(scope="session")
def _entra_session() -> EntraDouble:
    return EntraDouble()


@pytest.fixture(scope="session")
def entra_server(_entra_session: EntraDouble) -> Iterator[ServerThread]:
    with ServerThread(_entra_session.asgi_app()) as server:
        yield server


@pytest.fixture
def entra(_entra_session: EntraDouble) -> Iterator[EntraDouble]:
    """The session's Entra double, with its keys, counters and availability reset."""
    keys = list(_entra_session.keys)
    _entra_session.jwks_available = True
    _entra_session.jwks_body = None
    _entra_session.jwks_requests = 0
    yield _entra_session
    _entra_session.keys[:] = keys
    _entra_session.jwks_available = True
    _entra_session.jwks_body = None


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and a certificate for 127.0.0.1, for servers that must be https."""
    return generate_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def entra_tls_server(_entra_session: EntraDouble, tls: TlsFiles) -> Iterator[ServerThread]:
    """The same Entra double over TLS: azure-identity only talks to an https authority."""
    with ServerThread(_entra_session.asgi_app(), tls=tls) as server:
        yield server


@pytest.fixture(scope="session")
def other_key() -> SigningKey:
    return SigningKey.generate()


# The store. Every test that uses `store_backend` (directly or through `database`,
# `settings`, `lkps`, ...) runs once per backend, with the backend in its id
# (`test_x[sqlite]`, `test_x[postgresql]`); `@pytest.mark.backends("sqlite")` narrows it.
# PostgreSQL tests are skipped when the server cannot be reached, and fail instead when
# LKPS_TEST_REQUIRE_SERVICES=1 (as in CI).


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends(*names): run only on these store backends (sqlite, postgresql)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail the run when a collected test module declares no category (tests/categories.py)."""
    modules = [item.module for item in items if isinstance(item, pytest.Function)]
    if missing := uncategorized(module for module in modules if module is not None):
        raise pytest.UsageError(
            "test modules without a category marker (pytestmark = pytest.mark."
            f"{'|'.join(sorted(CATEGORIES))}): {', '.join(missing)}"
        )


# The suite runs in parallel (pytest-xdist, `--dist loadgroup`). The fault tests, which
# load the machine on purpose and count what happens in a time window (floods, kills,
# outages), run one after another on one worker, beside the rest: two floods at once
# would each measure the other. The agent and LiveKit tiers fix the load their workers
# report (lkps-agent's load_fnc), so they need no idle machine and run in parallel.
#
# The grouping is done by the scheduler rather than by an `xdist_group` marker: xdist
# 3.8 marks a grouped test by rewriting `item._nodeid`, which pytest 9 no longer reads
# (a node's id is `_id`), so the marker grouped nothing and the fault tests ran on both
# workers at once, test_replicas.py's module-scoped fleet started once per worker.
SERIAL_TIERS = ("faults",)
SERIAL_GROUP = "serial"


def serial_scope(nodeid: str) -> str | None:
    """The group a test of a serial tier runs in (`tests/<tier>/...`), else None."""
    parts = nodeid.split("::", 1)[0].split("/")
    return SERIAL_GROUP if len(parts) > 2 and parts[1] in SERIAL_TIERS else None


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `--dist loadgroup`, xdist's group scheduling with the serial tiers as one
    group; any other --dist is left to xdist."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling  # type: ignore[import-untyped]

    class SerialTiersScheduling(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            scope: str = serial_scope(nodeid) or super()._split_scope(nodeid)
            return scope

    return SerialTiersScheduling(config, log)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        backends = list(iter_backends(marker.args if marker else None))
        metafunc.parametrize("store_backend", backends, indirect=True, ids=str)


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> Backend:
    backend: Backend = request.param
    return backend


@pytest.fixture(scope="session")
def _migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The PostgreSQL server (LKPS_TEST_POSTGRES_URL), with a template database migrated
    to the newest revision once per session."""
    server = PostgresServer(postgres_admin_url())
    try:
        if error := server.unreachable():
            service_missing("PostgreSQL", server.display_url, error)
        server.make_template(upgrade)
        yield server
    finally:
        server.close()


@pytest.fixture
def database(
    store_backend: Backend, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[TestDatabase]:
    """This test's own store, migrated to the newest revision and empty."""
    if store_backend == "sqlite":
        template: Path = request.getfixturevalue("_migrated_template")
        path = tmp_path / "lkps.db"
        shutil.copy(template, path)
        yield TestDatabase("sqlite", f"sqlite+aiosqlite:///{path}", path)
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = server.take_database()
    try:
        yield TestDatabase("postgresql", server.url_of(name))
    finally:
        server.drop_database(name, wait=False)


@pytest.fixture
def empty_database(
    store_backend: Backend, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[TestDatabase]:
    """A store with no schema at all (for SQLite, a file in a folder not yet made)."""
    if store_backend == "sqlite":
        path = tmp_path / "db" / "lkps.db"
        yield TestDatabase("sqlite", f"sqlite+aiosqlite:///{path}", path)
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = server.create_database()
    try:
        yield TestDatabase("postgresql", server.url_of(name))
    finally:
        server.drop_database(name, wait=False)


@pytest.fixture
async def store_sql(database: TestDatabase) -> AsyncIterator[StoreSql]:
    """Raw SQL on this test's store, bypassing LKPS, on either backend."""
    sql = StoreSql(database)
    yield sql
    await sql.dispose()


@pytest.fixture(scope="session")
def _redis_server() -> str:
    url = redis_test_url()
    if error := redis_unreachable(url):
        service_missing("Redis", display_redis_url(url), error)
    return url


@pytest.fixture
def redis_url(_redis_server: str) -> Iterator[RedisTarget]:
    """Redis (LKPS_TEST_REDIS_URL, default db 15) and a key prefix for this test alone;
    every key under the prefix is deleted afterwards."""
    target = RedisTarget(_redis_server, unique_name("lkps-test:") + ":")
    try:
        yield target
    finally:
        target.clear()


@pytest.fixture
def livekit_agents_port_taken() -> Iterator[None]:
    """livekit-agents' fixed health port (8081) held by someone else, as on a developer's
    machine where another agent or service runs: the tests' agents must not need it."""
    with listening(LIVEKIT_AGENTS_HTTP_PORT):
        yield


@pytest.fixture
def authz_file(tmp_path: Path) -> Path:
    path = tmp_path / "authz.json"
    write_authorization_file(path, {AGENT: [CLIENT_A], AGENT_2: []})
    return path


@pytest.fixture
def settings_values(
    entra: EntraDouble,
    entra_server: ServerThread,
    database: TestDatabase,
    authz_file: Path,
    tmp_path: Path,
) -> dict[str, Any]:
    """A non-dev instance trusting the Entra double's tenant. Tests adjust the dict."""
    return {
        "env": "np",
        "livekit_url": LIVEKIT_URL,
        "livekit_api_key": LIVEKIT_KEY,
        "livekit_api_secret": LIVEKIT_SECRET,
        "entra_tenant_id": entra.tenant_id,
        "entra_audiences": [API_AUDIENCE, LKPS_CLIENT_ID],
        "entra_jwks_url": entra.jwks_url(entra_server.url),
        "authz_source": "file",
        "authz_file": authz_file,
        "database_url": database.url,
        "audit_key": new_audit_key(),
        "audit_signing_key": write_signing_key(tmp_path / "audit-signing.pem"),
        # Presence from register/heartbeat, as most tests drive it; gateway tests (and
        # the default) use "gateway", where presence is a live worker connection.
        "agent_connection": "direct",
    }


@pytest.fixture
def settings(settings_values: dict[str, Any]) -> Settings:
    settings = Settings(**settings_values)
    settings.check_servable()
    return settings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> AsyncIterator[FastAPI]:
    application = create_app(settings, clock=clock)
    async with application.router.lifespan_context(application):
        yield application


class Lkps:
    """A running LKPS, an HTTP client for it, and the Entra double that signs for it."""

    def __init__(self, app: FastAPI, http: httpx.AsyncClient, entra: EntraDouble) -> None:
        self.app = app
        self.http = http
        self.entra = entra

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def user_token(self, username: str = "alice", *, client: str = CLIENT_A, **claims: Any) -> str:
        claims.setdefault("audience", API_AUDIENCE)
        return self.entra.user_token(client_app_id=client, username=username, **claims)

    def app_token(self, client: str = AGENT, **claims: Any) -> str:
        claims.setdefault("audience", API_AUDIENCE)
        return self.entra.app_token(client_app_id=client, **claims)

    async def register(
        self, agent: str = AGENT, *, token: str | None = None, **body: Any
    ) -> httpx.Response:
        return await self.post("/api/agent/register", token or self.app_token(agent), body)

    async def heartbeat(self, agent: str = AGENT, **body: Any) -> httpx.Response:
        return await self.post("/api/agent/heartbeat", self.app_token(agent), body)

    async def deregister(self, agent: str = AGENT, **body: Any) -> httpx.Response:
        return await self.post("/api/agent/deregister", self.app_token(agent), body)

    async def start_session(
        self, agent: str | None = AGENT, *, token: str | None = None, **body: Any
    ) -> httpx.Response:
        if agent is not None:
            body["agent_entra_app_id"] = agent
        return await self.post("/api/session/start", token or self.user_token(), body)

    async def post(self, path: str, token: str | None, body: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return await self.http.post(path, json=body, headers=headers)

    async def audit_records(self) -> list[AuditRecord]:
        return [record async for record in self.services.audit.records()]


@pytest.fixture
async def lkps(app: FastAPI, entra: EntraDouble) -> AsyncIterator[Lkps]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://lkps.test") as http:
        yield Lkps(app, http, entra)


# LKPS on a real socket. The `app` fixture runs LKPS's lifespan in the test's event
# loop, which a blocking client (or another process) cannot drive; uvicorn runs this one,
# lifespan included, in a thread.


@dataclass
class Served:
    url: str
    entra: EntraDouble

    def user_token(self, client: str = CLIENT_A, username: str = "alice") -> str:
        return self.entra.user_token(client_app_id=client, username=username, audience=API_AUDIENCE)


@pytest.fixture
def served(settings: Settings, entra: EntraDouble) -> Iterator[Served]:
    """A real LKPS on a socket, with AGENT registered and enforcing client authorization."""
    with ServerThread(create_app(settings)) as server:
        agent_token = entra.app_token(audience=API_AUDIENCE, client_app_id=AGENT)
        response = httpx.post(
            f"{server.url}/api/agent/register",
            json={"enforce_client_authz": True},
            headers={"Authorization": f"Bearer {agent_token}"},
        )
        assert response.status_code == 200, response.text
        yield Served(server.url, entra)


@pytest.fixture
def livekit_verifier() -> TokenVerifier:
    """Checks tokens the way the LiveKit server does: HS256 with the API secret."""
    return TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET)
