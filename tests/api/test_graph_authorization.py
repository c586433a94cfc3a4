"""Session starts with `LKPS_AUTHZ_SOURCE=graph`: LKPS gets its own Graph token from the
Entra double (over TLS, as azure-identity requires) and reads the agent's
`preAuthorizedApplications` from the Graph double."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from lkps_testkit import EntraDouble, ServerThread
from lkps_testkit.entra import GRAPH_RESOURCE
from lkps_testkit.graph import GraphDouble
from lkps_testkit.tls import TlsFiles
from tests.api.util import running_lkps
from tests.conftest import AGENT, AGENT_2, CLIENT_A, CLIENT_B, LKPS_CLIENT_ID, FakeClock, Lkps

pytestmark = pytest.mark.api

LKPS_SECRET = "lkps-own-graph-secret"
NOT_AUTHORIZED = "You are not authorized to access this agent"


@pytest.fixture(scope="module")
def _graph_double(_entra_session: EntraDouble) -> GraphDouble:
    return GraphDouble(_entra_session)


@pytest.fixture(scope="module")
def graph_server(_graph_double: GraphDouble) -> Iterator[ServerThread]:
    with ServerThread(_graph_double.asgi_app()) as server:
        yield server


@pytest.fixture
def graph(_graph_double: GraphDouble, entra: EntraDouble) -> Iterator[GraphDouble]:
    """AGENT pre-authorizes CLIENT_A; AGENT_2 pre-authorizes nobody; LKPS's own app may
    read applications."""
    entra.client_secrets[LKPS_CLIENT_ID] = LKPS_SECRET
    entra.app_role_assignments[(LKPS_CLIENT_ID, GRAPH_RESOURCE)] = ["Application.Read.All"]
    _graph_double.reset()
    _graph_double.applications[AGENT] = [CLIENT_A]
    _graph_double.applications[AGENT_2] = []
    yield _graph_double
    _graph_double.reset()
    entra.client_secrets.pop(LKPS_CLIENT_ID, None)
    entra.app_role_assignments.pop((LKPS_CLIENT_ID, GRAPH_RESOURCE), None)


@pytest.fixture
def graph_settings(
    settings_values: dict[str, Any],
    graph: GraphDouble,
    entra_tls_server: ServerThread,
    graph_server: ServerThread,
    tls: TlsFiles,
) -> dict[str, Any]:
    return {
        **settings_values,
        "authz_source": "graph",
        "authz_file": None,
        "entra_client_id": LKPS_CLIENT_ID,
        "entra_client_secret": LKPS_SECRET,
        "entra_authority": entra_tls_server.url,
        "graph_url": graph_server.url,
        "graph_timeout_seconds": 60.0,  # generous: a timeout would measure the machine, not Graph
        "tls_ca_bundle": Path(tls.ca_cert),
    }


@pytest.fixture
async def lkps_graph(
    graph_settings: dict[str, Any], clock: FakeClock, entra: EntraDouble
) -> AsyncIterator[Lkps]:
    async with running_lkps(graph_settings, clock, entra) as lkps:
        assert (await lkps.register(AGENT, enforce_client_authz=True)).status_code == 200
        assert (await lkps.register(AGENT_2, enforce_client_authz=True)).status_code == 200
        yield lkps


async def test_pre_authorized_client_is_allowed(lkps_graph: Lkps, graph: GraphDouble) -> None:
    response = await lkps_graph.start_session(AGENT)
    assert response.status_code == 200, response.text
    assert (await lkps_graph.audit_records())[-1].reason == "client pre-authorized (graph)"
    ready = await lkps_graph.http.get("/api/health/ready")
    assert ready.json()["checks"]["authorization"] == "ok"


async def test_other_client_gets_the_seed_message_and_the_audit_says_why(
    lkps_graph: Lkps,
) -> None:
    response = await lkps_graph.start_session(AGENT, token=lkps_graph.user_token(client=CLIENT_B))
    assert response.status_code == 403
    assert response.json()["message"] == NOT_AUTHORIZED
    record = (await lkps_graph.audit_records())[-1]
    assert record.reason == f"client {CLIENT_B} is not pre-authorized for agent {AGENT}"


async def test_agent_not_enforcing_needs_no_graph_call(
    lkps_graph: Lkps, graph: GraphDouble
) -> None:
    await lkps_graph.register(AGENT_2, enforce_client_authz=False)
    before = graph.requests
    response = await lkps_graph.start_session(AGENT_2, token=lkps_graph.user_token(client=CLIENT_B))
    assert response.status_code == 200
    assert graph.requests == before


async def test_agent_unknown_to_graph_is_403_with_a_hint_for_its_owner(
    lkps_graph: Lkps, graph: GraphDouble
) -> None:
    unknown = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
    await lkps_graph.register(unknown, enforce_client_authz=True)
    response = await lkps_graph.start_session(unknown)
    assert response.status_code == 403
    assert response.json()["message"] == NOT_AUTHORIZED
    reason = (await lkps_graph.audit_records())[-1].reason or ""
    assert "unknown to the graph authorization source" in reason
    assert "pre-authorize" in reason


async def test_graph_down_with_nothing_cached_fails_closed(
    lkps_graph: Lkps, graph: GraphDouble
) -> None:
    graph.available = False
    response = await lkps_graph.start_session(AGENT)
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert "participant_token" not in response.text
    record = (await lkps_graph.audit_records())[-1]
    assert (record.outcome, record.status) == ("denied", 503)


async def test_graph_down_after_a_good_answer_serves_it_stale(
    lkps_graph: Lkps, graph: GraphDouble, clock: FakeClock
) -> None:
    assert (await lkps_graph.start_session(AGENT)).status_code == 200
    graph.available = False
    clock.advance(301)  # past the cache TTL
    await lkps_graph.register(AGENT, enforce_client_authz=True)  # presence is separate
    assert (await lkps_graph.start_session(AGENT)).status_code == 200
    denied = await lkps_graph.start_session(AGENT, token=lkps_graph.user_token(client=CLIENT_B))
    assert denied.status_code == 403  # stale, but still the same answer: never an allow


async def test_graph_throttling_is_honoured(lkps_graph: Lkps, graph: GraphDouble) -> None:
    graph.throttle(retry_after=120, times=1)
    first = await lkps_graph.start_session(AGENT)
    assert first.status_code == 503
    before = graph.requests
    for _ in range(5):
        assert (await lkps_graph.start_session(AGENT_2)).status_code == 503
    assert graph.requests == before  # nothing sent to Graph inside Retry-After


async def test_a_thousand_concurrent_starts_make_one_graph_request(
    lkps_graph: Lkps, graph: GraphDouble
) -> None:
    graph.delay = 0.2  # a slow Graph, so the requests really overlap
    tokens = [lkps_graph.user_token(f"user{i}") for i in range(1000)]
    responses = await asyncio.gather(
        *(lkps_graph.start_session(AGENT, token=token) for token in tokens)
    )
    assert {r.status_code for r in responses} == {200}
    assert graph.requests_by_app.get(AGENT) == 1


async def test_wrong_lkps_secret_makes_readiness_fail_and_sessions_503(
    graph_settings: dict[str, Any], clock: FakeClock, entra: EntraDouble
) -> None:
    graph_settings["entra_client_secret"] = "not-the-secret"
    async with running_lkps(graph_settings, clock, entra) as lkps:
        ready = await lkps.http.get("/api/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["authorization"] == "failing"
        await lkps.register(AGENT, enforce_client_authz=True)
        assert (await lkps.start_session(AGENT)).status_code == 503
