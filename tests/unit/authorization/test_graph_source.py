"""The Graph authorization source against real servers on 127.0.0.1.

The Entra double serves its token endpoint over TLS (azure-identity only talks to an
https authority) with a throwaway CA that LKPS's settings trust; the Graph double checks
LKPS's Graph token like Graph does. Time moves only through the fake clock, so TTLs,
stale windows and Retry-After are exercised without sleeping.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from azure.core.credentials import AccessToken

from lkps.authorization import AuthorizationUnavailable, ClientAuthorizer
from lkps.authorization.cache import CachePolicy
from lkps.authorization.graph import (
    GraphAuthorizationSource,
    build_graph_credential,
    graph_source_from_settings,
)
from lkps.authorization.graph_client import (
    GRAPH_SCOPE,
    GraphClient,
    MalformedGraphResponse,
    graph_scope_for,
    parse_pre_authorized_applications,
    parse_retry_after,
)
from lkps.config import ConfigurationError, Settings
from lkps.errors import Forbidden
from lkps_testkit.entra import GRAPH_RESOURCE, EntraDouble
from lkps_testkit.graph import GraphDouble
from lkps_testkit.server import ServerThread
from lkps_testkit.tls import TlsFiles, generate_client_certificate, generate_tls_files
from tests.conftest import AGENT, AGENT_2, CLIENT_A, CLIENT_B, FakeClock

pytestmark = pytest.mark.unit

LKPS_APP = "5c1f3d9e-0a7b-4c2d-9e8f-112233445566"
LKPS_CERT_APP = "6d2e4f0a-1b8c-4d3e-8f90-223344556677"
LKPS_SECRET = "lkps-graph-test-secret-value"
UNKNOWN_AGENT = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
TTL = 300.0
MAX_STALE = 3600.0
BACKOFF = 5.0
# Generous on purpose: a Graph lookup that times out here would measure the machine's
# speed, not Graph's. The timeout test holds Graph's answer, so only its timeout ends it.
GRAPH_TIMEOUT = 60.0

SourceFactory = Callable[..., GraphAuthorizationSource]


# Servers: one TLS Entra and one Graph for the module; state reset for every test.


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return generate_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def _graph_entra() -> EntraDouble:
    return EntraDouble()


@pytest.fixture(scope="module")
def entra_tls_server(_graph_entra: EntraDouble, tls: TlsFiles) -> Iterator[ServerThread]:
    with ServerThread(_graph_entra.asgi_app(), tls=tls) as server:
        yield server


@pytest.fixture(scope="module")
def _graph_double(_graph_entra: EntraDouble) -> GraphDouble:
    return GraphDouble(_graph_entra)


@pytest.fixture(scope="module")
def graph_server(_graph_double: GraphDouble) -> Iterator[ServerThread]:
    with ServerThread(_graph_double.asgi_app()) as server:
        yield server


@pytest.fixture
def graph_entra(_graph_entra: EntraDouble) -> EntraDouble:
    """LKPS's app registered with a secret and granted Application.Read.All on Graph."""
    _graph_entra.client_secrets.clear()
    _graph_entra.client_secrets[LKPS_APP] = LKPS_SECRET
    _graph_entra.client_certificates.clear()
    _graph_entra.app_role_assignments.clear()
    _graph_entra.app_role_assignments[(LKPS_APP, GRAPH_RESOURCE)] = ["Application.Read.All"]
    _graph_entra.token_requests = 0
    return _graph_entra


@pytest.fixture
def graph(_graph_double: GraphDouble, graph_entra: EntraDouble) -> Iterator[GraphDouble]:
    """AGENT pre-authorizes CLIENT_A; AGENT_2 exists and pre-authorizes nobody."""
    _graph_double.reset()
    _graph_double.applications[AGENT] = [CLIENT_A]
    _graph_double.applications[AGENT_2] = []
    yield _graph_double
    _graph_double.reset()


@pytest.fixture
def graph_settings(
    graph_entra: EntraDouble,
    entra_tls_server: ServerThread,
    graph_server: ServerThread,
    tls: TlsFiles,
) -> dict[str, Any]:
    return {
        "env": "np",
        "entra_tenant_id": graph_entra.tenant_id,
        "entra_client_id": LKPS_APP,
        "entra_client_secret": LKPS_SECRET,
        "entra_authority": entra_tls_server.url,
        "graph_url": graph_server.url,
        "graph_cache_ttl_seconds": TTL,
        "graph_timeout_seconds": GRAPH_TIMEOUT,
        "tls_ca_bundle": tls.ca_cert,
        "authz_source": "graph",
    }


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def make_source(
    graph_settings: dict[str, Any], http: httpx.AsyncClient, clock: FakeClock
) -> AsyncIterator[SourceFactory]:
    """Build sources from settings (overridable), the way a running LKPS does."""
    created: list[GraphAuthorizationSource] = []

    def make(*, settings: dict[str, Any] | None = None, **options: Any) -> GraphAuthorizationSource:
        values = graph_settings | (settings or {})
        configured = Settings(**values)
        if options:
            client = GraphClient(
                build_graph_credential(configured),
                http,
                clock,
                graph_url=configured.graph_url,
                timeout=configured.graph_timeout_seconds,
            )
            policy = CachePolicy(ttl=configured.graph_cache_ttl_seconds, **options)
            source = GraphAuthorizationSource(client, clock, policy)
        else:
            source = graph_source_from_settings(configured, http, clock)
        created.append(source)
        return source

    yield make
    for source in created:
        await source.aclose()


@pytest.fixture
def source(make_source: SourceFactory) -> GraphAuthorizationSource:
    return make_source()


# Answers.


async def test_pre_authorized_client_is_allowed_and_others_are_not(
    source: GraphAuthorizationSource, graph: GraphDouble
) -> None:
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})
    assert await source.pre_authorized_clients(AGENT_2) == frozenset()
    authorizer = ClientAuthorizer(source)
    allowed = await authorizer.check(agent_id=AGENT, client_app_id=CLIENT_A, enforce=True)
    assert allowed.reason == "client pre-authorized (graph)"
    with pytest.raises(Forbidden) as denied:
        await authorizer.check(agent_id=AGENT, client_app_id=CLIENT_B, enforce=True)
    assert denied.value.message == "You are not authorized to access this agent"
    assert CLIENT_B in denied.value.reason
    assert source.ready()
    assert graph.requests_by_app == {AGENT: 1, AGENT_2: 1}
    assert (source.graph_requests, source.graph_failures, source.cache_hits) == (2, 0, 2)


async def test_upper_case_ids_from_graph_and_callers(
    source: GraphAuthorizationSource, graph: GraphDouble
) -> None:
    graph.applications[AGENT] = [CLIENT_A.upper(), f" {CLIENT_B.upper()} "]
    assert await source.pre_authorized_clients(AGENT.upper()) == frozenset({CLIENT_A, CLIENT_B})
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A, CLIENT_B})
    allowed = await ClientAuthorizer(source).check(
        agent_id=AGENT.upper(), client_app_id=CLIENT_A.upper(), enforce=True
    )
    assert "pre-authorized" in allowed.reason
    assert graph.requests == 1  # one cache entry, whatever the case


async def test_graph_404_is_an_answer_and_is_cached(
    source: GraphAuthorizationSource, graph: GraphDouble, clock: FakeClock
) -> None:
    assert await source.pre_authorized_clients(UNKNOWN_AGENT) is None
    clock.advance(TTL - 1)
    assert await source.pre_authorized_clients(UNKNOWN_AGENT) is None
    assert graph.requests == 1
    assert source.graph_failures == 0
    assert source.ready()
    with pytest.raises(Forbidden) as denied:
        await ClientAuthorizer(source).check(
            agent_id=UNKNOWN_AGENT, client_app_id=CLIENT_A, enforce=True
        )
    assert "unknown to the graph authorization source" in denied.value.reason


@pytest.mark.parametrize("agent_id", ["not-a-uuid", "x') or 1 eq 1 or ('", ""])
async def test_agent_id_that_is_not_an_app_id_never_reaches_graph(
    source: GraphAuthorizationSource, graph: GraphDouble, agent_id: str
) -> None:
    assert await source.pre_authorized_clients(agent_id) is None
    assert graph.requests == 0


# Failures: fail closed, serve stale within bounds.


async def test_graph_down_with_nothing_cached_fails_closed(
    source: GraphAuthorizationSource, graph: GraphDouble, clock: FakeClock
) -> None:
    graph.available = False
    with pytest.raises(AuthorizationUnavailable) as unavailable:
        await source.pre_authorized_clients(AGENT)
    assert "503 ServiceUnavailable" in unavailable.value.reason
    assert unavailable.value.status_code == 503
    # Within the failure backoff Graph is not asked again.
    with pytest.raises(AuthorizationUnavailable):
        await source.pre_authorized_clients(AGENT)
    assert graph.requests == 1
    assert source.graph_failures == 1
    assert source.ready()  # Graph's outage is not this instance's misconfiguration
    graph.available = True
    clock.advance(BACKOFF)
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})
    assert graph.requests == 2


async def test_graph_down_serves_stale_within_max_stale_then_fails_closed(
    make_source: SourceFactory, graph: GraphDouble, clock: FakeClock
) -> None:
    source = make_source(max_stale=MAX_STALE, failure_backoff=BACKOFF)
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})
    graph.available = False
    clock.advance(TTL + 1)
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})  # stale
    await source.wait_for_lookups()
    assert (graph.requests, source.graph_failures) == (2, 1)
    # While Graph keeps failing: stale answers, at most one Graph attempt per backoff.
    for _ in range(10):
        assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})
    await source.wait_for_lookups()
    assert graph.requests == 2
    clock.advance(MAX_STALE - 1 - BACKOFF)  # TTL + MAX_STALE - BACKOFF after the fetch
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})
    await source.wait_for_lookups()
    assert graph.requests == 3
    clock.advance(BACKOFF + 1)  # now past TTL + MAX_STALE: the old answer may not be used
    with pytest.raises(AuthorizationUnavailable):
        await source.pre_authorized_clients(AGENT)
    assert graph.requests == 4
    assert source.stale_served == 12


async def test_timeout_of_a_slow_graph_fails_closed(
    graph: GraphDouble, graph_server: ServerThread, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    client = GraphClient(StaticCredential(), http, clock, graph_url=graph_server.url, timeout=0.3)
    source = GraphAuthorizationSource(client, clock)
    graph.hold()  # Graph does not answer: only LKPS's own timeout can end the lookup
    try:
        async with hang_guard():
            with pytest.raises(AuthorizationUnavailable) as unavailable:
                await source.pre_authorized_clients(AGENT)
    finally:
        graph.release()
        await source.aclose()
    assert "did not answer within 0.3s" in unavailable.value.reason
    assert source.graph_failures == 1


async def test_network_error_fails_closed(make_source: SourceFactory) -> None:
    source = make_source(settings={"graph_url": unused_port_url()})
    with pytest.raises(AuthorizationUnavailable) as unavailable:
        await source.pre_authorized_clients(AGENT)
    assert "ConnectError" in unavailable.value.reason


# Throttling.


@pytest.mark.parametrize("header", ["seconds", "http-date"])
async def test_429_retry_after_is_honoured_globally(
    source: GraphAuthorizationSource, graph: GraphDouble, clock: FakeClock, header: str
) -> None:
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})
    clock.advance(TTL)
    retry_after = (
        "30" if header == "seconds" else format_datetime(clock.now() + timedelta(seconds=30), True)
    )
    graph.throttle(retry_after=retry_after, times=1)
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})  # stale
    await source.wait_for_lookups()
    assert graph.throttled_responses == 1
    assert source.throttled == 1
    requests = graph.requests
    clock.advance(28)
    for _ in range(5):  # during the window: stale for AGENT, 503 for an agent never asked
        assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})
        with pytest.raises(AuthorizationUnavailable) as unavailable:
            await source.pre_authorized_clients(AGENT_2)
        assert "throttled" in unavailable.value.reason
    await source.wait_for_lookups()
    assert graph.requests == requests  # not one Graph request in the window
    clock.advance(3)
    assert await source.pre_authorized_clients(AGENT_2) == frozenset()
    assert graph.requests == requests + 1


async def test_429_without_anything_cached_fails_closed(
    source: GraphAuthorizationSource, graph: GraphDouble, clock: FakeClock
) -> None:
    graph.throttle(retry_after=2, times=1)
    with pytest.raises(AuthorizationUnavailable) as unavailable:
        await source.pre_authorized_clients(AGENT)
    assert "429 TooManyRequests" in unavailable.value.reason
    clock.advance(1)
    with pytest.raises(AuthorizationUnavailable):
        await source.pre_authorized_clients(AGENT)
    assert graph.requests == 1
    clock.advance(1)
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})
    assert graph.requests == 2


# Caching.


async def test_one_thousand_concurrent_callers_share_one_graph_request(
    source: GraphAuthorizationSource, graph: GraphDouble
) -> None:
    graph.delay = 0.1
    answers = await asyncio.gather(*(source.pre_authorized_clients(AGENT) for _ in range(1000)))
    assert set(answers) == {frozenset({CLIENT_A})}
    assert graph.requests == 1
    assert graph.requests_by_app[AGENT] == 1
    assert source.graph_requests == 1


async def test_concurrent_callers_share_one_failure(
    source: GraphAuthorizationSource, graph: GraphDouble
) -> None:
    graph.available = False
    outcomes = await asyncio.gather(
        *(source.pre_authorized_clients(AGENT) for _ in range(100)), return_exceptions=True
    )
    assert all(isinstance(outcome, AuthorizationUnavailable) for outcome in outcomes)
    assert graph.requests == 1


async def test_ttl_expiry_refreshes_in_the_background_serving_the_stale_answer(
    source: GraphAuthorizationSource, graph: GraphDouble, clock: FakeClock
) -> None:
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})
    graph.applications[AGENT] = [CLIENT_B]
    clock.advance(TTL - 1)
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})
    assert graph.requests == 1
    clock.advance(1)
    graph.hold()  # the refresh stays unanswered: callers get the stale answer meanwhile
    async with hang_guard():
        assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})
        assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})
    graph.release()
    await source.wait_for_lookups()
    assert graph.requests == 2  # one background refresh for both stale answers
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_B})
    assert (source.stale_served, source.cache_hits) == (2, 2)


# LKPS's own credentials.


async def test_graph_token_is_fetched_once_and_reused(
    source: GraphAuthorizationSource,
    graph: GraphDouble,
    graph_entra: EntraDouble,
    clock: FakeClock,
) -> None:
    await asyncio.gather(
        source.pre_authorized_clients(AGENT),
        source.pre_authorized_clients(AGENT_2),
        source.pre_authorized_clients(UNKNOWN_AGENT),
    )
    clock.advance(TTL + 1)
    await source.pre_authorized_clients(AGENT)
    await source.wait_for_lookups()
    assert graph.requests == 4
    assert graph_entra.token_requests == 1


async def test_wrong_client_secret_fails_closed_and_fails_readiness(
    make_source: SourceFactory, graph: GraphDouble, graph_entra: EntraDouble, clock: FakeClock
) -> None:
    source = make_source(settings={"entra_client_secret": "not-the-secret"})
    with pytest.raises(AuthorizationUnavailable) as unavailable:
        await source.pre_authorized_clients(AGENT)
    assert "AADSTS7000215" in unavailable.value.reason
    assert "not-the-secret" not in unavailable.value.reason
    assert graph.requests == 0
    assert graph_entra.token_requests == 1
    assert source.configuration_problem is not None
    # Readiness re-checks by itself (no session start needed) once the secret is right.
    assert not source.ready()
    await source.wait_for_lookups()
    assert graph_entra.token_requests == 2
    assert not source.ready()  # a re-check at most once per failure backoff
    await source.wait_for_lookups()
    assert graph_entra.token_requests == 2
    graph_entra.client_secrets[LKPS_APP] = "not-the-secret"
    clock.advance(BACKOFF)
    assert not source.ready()
    await source.wait_for_lookups()
    assert source.ready()
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})


async def test_verify_access_at_startup(make_source: SourceFactory, graph: GraphDouble) -> None:
    good = make_source()
    assert await good.verify_access()
    assert good.ready()
    bad = make_source(settings={"entra_client_secret": "not-the-secret"})
    assert not await bad.verify_access()
    assert "AADSTS7000215" in (bad.configuration_problem or "")
    assert graph.requests == 0


async def test_missing_graph_permission_fails_closed_and_fails_readiness(
    source: GraphAuthorizationSource, graph: GraphDouble, graph_entra: EntraDouble
) -> None:
    graph_entra.app_role_assignments.clear()
    with pytest.raises(AuthorizationUnavailable) as unavailable:
        await source.pre_authorized_clients(AGENT)
    assert "403 Authorization_RequestDenied" in unavailable.value.reason
    assert not source.ready()
    await source.wait_for_lookups()
    assert not source.ready()
    assert graph.requests == 1  # the re-check waits out the failure backoff


async def test_certificate_credential(
    make_source: SourceFactory, graph: GraphDouble, graph_entra: EntraDouble, tmp_path: Path
) -> None:
    certificate = generate_client_certificate(tmp_path / "lkps.pem")
    graph_entra.client_certificates[LKPS_CERT_APP] = [certificate.certificate]
    graph_entra.app_role_assignments[(LKPS_CERT_APP, GRAPH_RESOURCE)] = ["Application.Read.All"]
    source = make_source(
        settings={
            "entra_client_id": LKPS_CERT_APP,
            "entra_client_secret": "",
            "entra_client_certificate_path": certificate.path,
        }
    )
    assert await source.pre_authorized_clients(AGENT) == frozenset({CLIENT_A})
    # A certificate Entra does not know is refused.
    other = generate_client_certificate(tmp_path / "other.pem")
    stranger = make_source(
        settings={
            "entra_client_id": LKPS_CERT_APP,
            "entra_client_certificate_path": other.path,
        }
    )
    with pytest.raises(AuthorizationUnavailable) as unavailable:
        await stranger.pre_authorized_clients(AGENT)
    assert "AADSTS700027" in unavailable.value.reason


def test_credential_needs_a_usable_secret_or_certificate(
    graph_settings: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="LKPS_ENTRA_CLIENT_SECRET or"):
        build_graph_credential(Settings(**(graph_settings | {"entra_client_secret": ""})))
    unreadable = tmp_path / "missing.pem"
    with pytest.raises(ConfigurationError, match="LKPS_ENTRA_CLIENT_CERTIFICATE_PATH"):
        build_graph_credential(
            Settings(**(graph_settings | {"entra_client_certificate_path": unreadable}))
        )
    with pytest.raises(ConfigurationError, match="LKPS_ENTRA_AUTHORITY"):
        build_graph_credential(
            Settings(**(graph_settings | {"entra_authority": "http://login.example"}))
        )


async def test_closed_source_is_unavailable(source: GraphAuthorizationSource) -> None:
    await source.aclose()
    assert not source.ready()
    with pytest.raises(AuthorizationUnavailable):
        await source.pre_authorized_clients(AGENT)


# Responses that are not what Graph sends, through an in-memory transport.


class StaticCredential:
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == (GRAPH_SCOPE,)
        return AccessToken("a-graph-token", int(time.time()) + 3600)

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (200, "not json", "unusable body"),
        (200, json.dumps({"id": "x"}), "unusable body"),
        (200, json.dumps({"api": {"preAuthorizedApplications": {}}}), "unusable body"),
        (200, json.dumps({"api": {"preAuthorizedApplications": [{"x": 1}]}}), "unusable body"),
        (404, "<html>not found</html>", "404 no OData error"),
        (500, json.dumps({"error": {"code": "generalException"}}), "500 generalException"),
        (302, "", "302"),
    ],
)
async def test_unexpected_graph_responses_fail_closed(
    clock: FakeClock, status: int, body: str, reason: str
) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer a-graph-token"
        assert request.url.params["$select"] == "api"
        return httpx.Response(status, text=body, headers={"Location": "https://elsewhere"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(respond)) as client:
        source = GraphAuthorizationSource(GraphClient(StaticCredential(), client, clock), clock)
        with pytest.raises(AuthorizationUnavailable) as unavailable:
            await source.pre_authorized_clients(AGENT)
        await source.aclose()
    assert reason in unavailable.value.reason


def test_parse_pre_authorized_applications() -> None:
    document = {
        "api": {"preAuthorizedApplications": [{"appId": CLIENT_A.upper()}, {"appId": CLIENT_B}]}
    }
    assert parse_pre_authorized_applications(document) == frozenset({CLIENT_A, CLIENT_B})
    assert parse_pre_authorized_applications({"api": None}) == frozenset()
    assert parse_pre_authorized_applications({"api": {}}) == frozenset()
    bad: object
    for bad in ([], {"api": []}, {"api": {"preAuthorizedApplications": [{"appId": 3}]}}):
        with pytest.raises(MalformedGraphResponse):
            parse_pre_authorized_applications(bad)


def test_parse_retry_after(clock: FakeClock) -> None:
    now = clock.now().replace(microsecond=0)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 2.5 ", now) == 2.5
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), True), now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), True), now) == 0.0
    for unusable in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(unusable, now) is None


def test_graph_scope_for() -> None:
    assert graph_scope_for("https://graph.microsoft.com") == GRAPH_SCOPE
    assert graph_scope_for("https://graph.microsoft.us/") == "https://graph.microsoft.us/.default"
    assert graph_scope_for("http://127.0.0.1:8443") == GRAPH_SCOPE
    assert graph_scope_for("https://graph-proxy.corp.example") == GRAPH_SCOPE


def hang_guard() -> asyncio.Timeout:
    """Turns a wait that would never end (a caller waiting for a held Graph) into a
    failure; not a speed check: passing calls return without Graph, whatever the load."""
    return asyncio.timeout(60)


def unused_port_url() -> str:
    """A URL on 127.0.0.1 whose port was just released, so connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# The Graph double answers like Graph (what the tests above rely on).


def test_graph_double_checks_tokens_and_speaks_odata(
    graph: GraphDouble, graph_server: ServerThread, graph_entra: EntraDouble
) -> None:
    def get(path: str, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(
            f"{graph_server.url}/v1.0/{path}", params={"$select": "api"}, headers=headers
        )

    def token(**claims: Any) -> str:
        claims = {"audience": GRAPH_RESOURCE, "roles": ["Application.Read.All"]} | claims
        return graph_entra.app_token(client_app_id=LKPS_APP, version="1.0", **claims)

    by_app_id = f"applications(appId='{AGENT}')"
    ok = get(by_app_id, token())
    assert ok.status_code == 200
    body = ok.json()
    assert body["@odata.context"] == (
        "https://graph.microsoft.com/v1.0/$metadata#applications(api)/$entity"
    )
    assert set(body) == {"@odata.context", "api"}
    [pre_authorized] = body["api"]["preAuthorizedApplications"]
    assert pre_authorized["appId"] == CLIENT_A
    assert pre_authorized["delegatedPermissionIds"] == [
        body["api"]["oauth2PermissionScopes"][0]["id"]
    ]
    assert get(f"applications/{graph.object_id(AGENT)}", token()).json()["api"] == body["api"]

    missing = get(by_app_id, None)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "WWW-Authenticate" in missing.headers
    assert get(by_app_id, token(audience="api://something-else")).status_code == 401
    assert get(by_app_id, token(lifetime=-600)).status_code == 401
    forged = EntraDouble(tenant_id=graph_entra.tenant_id).app_token(
        audience=GRAPH_RESOURCE, client_app_id=LKPS_APP, roles=["Application.Read.All"]
    )
    assert get(by_app_id, forged).status_code == 401
    no_role = get(by_app_id, token(roles=[]))
    assert no_role.status_code == 403
    assert no_role.json()["error"]["code"] == "Authorization_RequestDenied"

    unknown = get(f"applications(appId='{UNKNOWN_AGENT}')", token())
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert error["code"] == "Request_ResourceNotFound"
    assert error["message"] == (
        f"Resource '{UNKNOWN_AGENT}' does not exist or one of its queried "
        "reference-property objects are not present."
    )
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
    assert graph.requests_by_app[AGENT] == 7
    assert graph.requests == 8


def test_entra_double_issues_v1_graph_tokens_with_roles(
    graph_entra: EntraDouble, entra_tls_server: ServerThread, tls: TlsFiles
) -> None:
    response = httpx.post(
        f"{entra_tls_server.url}/{graph_entra.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": LKPS_APP,
            "client_secret": LKPS_SECRET,
            "scope": "https://graph.microsoft.com/.default",
        },
        verify=tls.client_context(),
    )
    assert response.status_code == 200
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["iss"] == f"https://sts.windows.net/{graph_entra.tenant_id}/"
    assert (claims["ver"], claims["appid"], claims["idtyp"]) == ("1.0", LKPS_APP, "app")
    assert claims["roles"] == ["Application.Read.All"]
