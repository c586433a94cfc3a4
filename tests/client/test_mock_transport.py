"""What LKPS itself cannot easily be made to do (a 503, a gateway's HTML page, a dropped
connection) and the administration and audit endpoints, answered by httpx.MockTransport
with the shapes the API documents."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

import lkps_client
from lkps_client import (
    AgentNotConnectedError,
    AsyncLkpsClient,
    AuthorizationOverride,
    LkpsClient,
    LkpsError,
    NotAuthorizedError,
    NotFoundError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    UnexpectedResponseError,
)
from tests.client.conftest import FakeCredential
from tests.conftest import AGENT, AGENT_2, CLIENT_A, CLIENT_B

pytestmark = pytest.mark.api

URL = "https://lkps.test"
SESSION = {
    "room_name": f"alice-{AGENT}-1763912440-0123456789abcdef",
    "livekit_url": "wss://livekit.test",
    "participant_token": "header.payload.signature",
    "session_id": "0b6f4c1e-2a4d-4f7e-9c1b-5d3e2f1a0b9c",
    "expires_at": "2026-11-23T15:40:40.428633Z",
    "added_by_a_newer_lkps": {"ignored": True},
}
OVERRIDE = {
    "agent_id": AGENT,
    "enforce_client_authz": True,
    "additional_clients": [CLIENT_B],
    "updated_at": "2026-01-02T03:04:05Z",
    "updated_by": "ADMIN1 (tid/oid)",
    "also_new": 1,
}

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class Recorder:
    """Answers requests with `handler`, and keeps them."""

    handler: Handler
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def client(self, **options: Any) -> LkpsClient:
        options.setdefault("token", "t0ken")
        http = httpx.Client(transport=httpx.MockTransport(self))
        return LkpsClient(URL, http_client=http, **options)

    def async_client(self, **options: Any) -> AsyncLkpsClient:
        options.setdefault("token", "t0ken")
        http = httpx.AsyncClient(transport=httpx.MockTransport(self))
        return AsyncLkpsClient(URL, http_client=http, **options)


def error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    body = {"error": code, "message": message, "request_id": "req-from-lkps"}
    return httpx.Response(status, json=body, headers={"X-Request-ID": "req-from-lkps", **headers})


def answers(*responses: httpx.Response | Exception) -> Recorder:
    """A recorder giving these answers in turn (an exception is raised, as a transport would)."""
    queue: Iterator[httpx.Response | Exception] = iter(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(queue)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return Recorder(handler)


def ok(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body, headers={"X-Request-ID": "req-from-lkps"})


# Requests


def test_session_request_has_the_contract_shape() -> None:
    recorder = answers(ok(SESSION), ok(SESSION))
    client = recorder.client()
    session = client.start_session(AGENT, metadata={"language": "en"})
    client.start_session(AGENT)
    first, second = recorder.requests
    assert (first.method, str(first.url)) == ("POST", f"{URL}/api/session/start")
    assert json.loads(first.content) == {
        "agent_entra_app_id": AGENT,
        "metadata": {"language": "en"},
    }
    assert json.loads(second.content) == {"agent_entra_app_id": AGENT}  # no metadata: omitted
    assert first.headers["Authorization"] == "Bearer t0ken"
    assert first.headers["User-Agent"] == f"lkps-client/{lkps_client.__version__}"
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]
    assert session.expires_at == datetime(2026, 11, 23, 15, 40, 40, 428633, tzinfo=UTC)
    assert session.request_id == "req-from-lkps"


def test_base_url_path_is_kept() -> None:
    recorder = answers(ok(SESSION))
    http = httpx.Client(transport=httpx.MockTransport(recorder))
    LkpsClient("https://gw.test/lkps/", token="t", http_client=http).start_session(AGENT)
    assert str(recorder.requests[0].url) == "https://gw.test/lkps/api/session/start"


def test_older_server_without_extensions() -> None:
    minimal = {key: SESSION[key] for key in ("room_name", "livekit_url", "participant_token")}
    session = answers(ok(minimal)).client().start_session(AGENT)
    assert (session.session_id, session.expires_at) == (None, None)


# Errors


def test_503_carries_retry_after() -> None:
    recorder = answers(
        error(503, "service_unavailable", "Service unavailable", **{"Retry-After": "5"})
    )
    with pytest.raises(ServiceUnavailableError) as caught:
        recorder.client().start_session(AGENT)
    assert isinstance(caught.value, ServerError)
    assert caught.value.retry_after == 5.0
    assert caught.value.request_id == "req-from-lkps"
    assert len(recorder.requests) == 1  # no retries unless asked for


def test_retries_wait_as_long_as_retry_after_says() -> None:
    unavailable = error(503, "service_unavailable", "Service unavailable", **{"Retry-After": "0.2"})
    recorder = answers(unavailable, unavailable, ok(SESSION))
    started = time.monotonic()
    session = recorder.client(retries=2).start_session(AGENT)
    assert time.monotonic() - started >= 0.4
    assert session.room_name == SESSION["room_name"]
    # One call, one request id, however many attempts: LKPS's log shows them together.
    assert len({request.headers["X-Request-ID"] for request in recorder.requests}) == 1
    assert len(recorder.requests) == 3


def test_retries_give_up() -> None:
    unavailable = error(503, "service_unavailable", "Service unavailable", **{"Retry-After": "0"})
    recorder = answers(unavailable, unavailable)
    with pytest.raises(ServiceUnavailableError):
        recorder.client(retries=1).start_session(AGENT)
    assert len(recorder.requests) == 2


def test_retry_after_beyond_the_cap_is_raised_at_once() -> None:
    recorder = answers(error(503, "service_unavailable", "Busy", **{"Retry-After": "3600"}))
    with pytest.raises(ServiceUnavailableError) as caught:
        recorder.client(retries=3).start_session(AGENT)
    assert caught.value.retry_after == 3600.0
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("status", "code", "message", "raised"),
    [
        (500, "internal_error", "Session creation failed", ServerError),
        (403, "forbidden", "You are not authorized to access this agent", NotAuthorizedError),
        (415, "unsupported_media_type", "Content-Type must be application/json", LkpsError),
    ],
)
def test_other_errors_are_not_retried(
    status: int, code: str, message: str, raised: type[LkpsError]
) -> None:
    recorder = answers(error(status, code, message))
    with pytest.raises(raised) as caught:
        recorder.client(retries=3).start_session(AGENT)
    assert type(caught.value) is raised
    assert (caught.value.status_code, caught.value.code, caught.value.message) == (
        status,
        code,
        message,
    )
    assert len(recorder.requests) == 1


def test_gateway_html_502() -> None:
    page = httpx.Response(502, html="<html><body><h1>502 Bad Gateway</h1></body></html>")
    recorder = answers(page)
    with pytest.raises(ServerError) as caught:
        recorder.client().start_session(AGENT)
    error = caught.value
    assert (error.status_code, error.code) == (502, "http_502")
    assert error.message == "LKPS answered 502 Bad Gateway"
    # No X-Request-ID came back: the error carries the one we sent.
    assert error.request_id == recorder.requests[0].headers["X-Request-ID"]
    assert "<html>" not in str(error)


def test_a_bare_404_is_not_a_missing_agent() -> None:
    """Only LKPS's own error body says the agent is missing; a bare 404 means the base URL
    points at something else, which 'agent not connected' would hide."""
    with pytest.raises(NotFoundError) as caught:
        answers(httpx.Response(404, text="Not Found")).client().start_session(AGENT)
    assert not isinstance(caught.value, AgentNotConnectedError)


def test_network_failure_is_a_transport_error() -> None:
    recorder = answers(httpx.ConnectError("connection refused"))
    with pytest.raises(TransportError) as caught:
        recorder.client().start_session(AGENT)
    error = caught.value
    assert (error.status_code, error.code) == (None, "transport_error")
    assert "connection refused" in error.message
    assert error.request_id == recorder.requests[0].headers["X-Request-ID"]
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert str(error).endswith(f"(no response, request id {error.request_id})")


def test_timeout_is_a_transport_error_and_retried() -> None:
    recorder = answers(httpx.ReadTimeout("timed out"), ok(SESSION))
    with pytest.raises(TransportError) as caught:
        answers(httpx.ReadTimeout("timed out")).client(timeout=2).start_session(AGENT)
    assert caught.value.code == "timeout"
    assert "within 2 s" in caught.value.message
    assert recorder.client(retries=1).start_session(AGENT).room_name == SESSION["room_name"]
    assert len(recorder.requests) == 2


def test_malformed_success_body() -> None:
    recorder = answers(httpx.Response(200, html="<html>Sign in</html>"), ok({"room_name": "x"}))
    client = recorder.client()
    with pytest.raises(UnexpectedResponseError) as caught:
        client.start_session(AGENT)
    assert caught.value.status_code == 200
    with pytest.raises(UnexpectedResponseError, match=r"participant_token|livekit_url"):
        client.start_session(AGENT)


async def test_async_errors_and_retries() -> None:
    unavailable = error(503, "service_unavailable", "Service unavailable", **{"Retry-After": "0"})
    recorder = answers(
        unavailable,
        httpx.ConnectError("refused"),
        error(404, "not_found", f"Agent with app ID '{AGENT_2}' is not connected"),
        unavailable,
    )
    async with recorder.async_client(retries=1) as client:
        with pytest.raises(TransportError):
            await client.start_session(AGENT_2)
        with pytest.raises(AgentNotConnectedError):
            await client.start_session(AGENT_2)
    with pytest.raises(ServiceUnavailableError):
        await recorder.async_client().start_session(AGENT)
    assert len(recorder.requests) == 4


# Authentication


def test_401_makes_the_credential_fetch_a_new_token() -> None:
    rejected = error(401, "invalid_token", "The access token is missing or invalid")
    recorder = answers(ok(SESSION), rejected, ok(SESSION))
    credential = FakeCredential(["one", "two"])
    client = recorder.client(token=None, credential=credential, scope="api://x/.default")
    client.start_session(AGENT)
    with pytest.raises(lkps_client.AuthenticationError):
        client.start_session(AGENT)
    client.start_session(AGENT)
    tokens = [request.headers["Authorization"] for request in recorder.requests]
    assert tokens == ["Bearer one", "Bearer one", "Bearer two"]


def test_for_environment() -> None:
    recorder = answers(ok(SESSION), ok(SESSION), ok(SESSION))
    http = httpx.Client(transport=httpx.MockTransport(recorder))
    credential = FakeCredential(["a", "b"])
    np = LkpsClient.for_environment("np", credential=credential, http_client=http)
    np.start_session(AGENT)
    assert str(recorder.requests[0].url).startswith(
        "https://eu-livekit-platform-service-np.int.bayer.com/api/"
    )
    assert credential.scopes == [("api://livekit-platform-service-np.int.bayer.com/.default",)]

    prod = LkpsClient.for_environment("prod", token="t", http_client=http)
    prod.start_session(AGENT)
    assert recorder.requests[1].url.host == "eu-livekit-platform-service.int.bayer.com"

    custom = LkpsClient.for_environment(
        "prod", credential=credential, scope="api://other/.default", base_url="https://pl.test"
    )
    assert custom.base_url == "https://pl.test"
    custom.close()
    with pytest.raises(ValueError, match="known: dev, np, prod"):
        LkpsClient.for_environment("staging", token="t")
    dev = LkpsClient.for_environment("dev", token="t")
    assert dev.base_url == "http://127.0.0.1:8080"  # `lkps dev`
    dev.close()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"token": "t", "token_provider": lambda: "t"},
        {"credential": FakeCredential([])},  # no scope
    ],
)
def test_exactly_one_way_to_authenticate(options: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        LkpsClient(URL, **options)


def test_scope_beside_a_token_is_ignored() -> None:
    recorder = answers(ok(SESSION))
    recorder.client(token="t", scope="api://x/.default").start_session(AGENT)
    assert recorder.requests[0].headers["Authorization"] == "Bearer t"


def test_owned_http_client_is_closed_and_a_given_one_is_not() -> None:
    given = httpx.Client()
    with LkpsClient(URL, token="t", http_client=given):
        pass
    assert not given.is_closed
    given.close()
    client = LkpsClient(URL, token="t")
    client.close()
    assert client._http.is_closed


# Administration and audit


AGENTS = {
    "agents": [
        {
            "agent_id": AGENT,
            "present": True,
            "enforce_client_authz": False,
            "registered_enforce_client_authz": True,
            "override": {  # without agent_id, as the agent list may send it
                "enforce_client_authz": False,
                "additional_clients": [CLIENT_A],
                "updated_at": "2026-01-02T03:04:05+00:00",
                "updated_by": "ADMIN1",
            },
            "version": "1.4.0",
            "first_registered_at": "2026-01-01T00:00:00Z",
            "last_registered_at": "2026-01-02T00:00:00Z",
            "last_heartbeat_at": "2026-01-02T00:00:30Z",
            "active_registrations": 2,
            "region": "eu",  # unknown: ignored
        },
        {
            "agent_id": AGENT_2,
            "present": False,
            "enforce_client_authz": True,
            "registered_enforce_client_authz": True,
            "override": None,
            "version": None,
            "first_registered_at": "2026-01-01T00:00:00Z",
            "last_registered_at": "2026-01-01T00:00:00Z",
            "last_heartbeat_at": None,
            "active_registrations": 0,
        },
    ],
    "total": 2,
}


def test_list_agents() -> None:
    recorder = answers(ok(AGENTS))
    first, second = recorder.client().list_agents()
    assert str(recorder.requests[0].url) == f"{URL}/api/agents"
    assert first.override == AuthorizationOverride(
        agent_id=AGENT,
        enforce_client_authz=False,
        additional_clients=(CLIENT_A,),
        updated_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        updated_by="ADMIN1",
    )
    assert (first.present, first.enforce_client_authz, first.registered_enforce_client_authz) == (
        True,
        False,
        True,
    )
    assert (first.version, first.active_registrations) == ("1.4.0", 2)
    assert first.last_heartbeat_at == datetime(2026, 1, 2, 0, 0, 30, tzinfo=UTC)
    assert (second.override, second.version, second.last_heartbeat_at) == (None, None, None)


def test_authorization_override_round() -> None:
    recorder = answers(
        httpx.Response(404, json={"error": "not_found", "message": "none", "request_id": "r"}),
        ok(OVERRIDE),
        ok(OVERRIDE),
        httpx.Response(204),
    )
    client = recorder.client()
    assert client.get_authorization_override(AGENT) is None
    override = client.set_authorization_override(
        AGENT, enforce_client_authz=True, additional_clients=[CLIENT_B]
    )
    assert client.get_authorization_override(AGENT) == override
    assert override.additional_clients == (CLIENT_B,)
    assert override.updated_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    client.clear_authorization_override(AGENT)

    methods = [(r.method, r.url.path) for r in recorder.requests]
    path = f"/api/agents/{AGENT}/authorization"
    assert methods == [("GET", path), ("PUT", path), ("GET", path), ("DELETE", path)]
    assert json.loads(recorder.requests[1].content) == {
        "enforce_client_authz": True,
        "additional_clients": [CLIENT_B],
    }


def test_override_defaults_and_guards() -> None:
    recorder = answers(
        ok(OVERRIDE),
        error(403, "forbidden", "Requires the app role 'LKPS.Admin'"),
        error(404, "not_found", "Not Found"),
    )
    client = recorder.client()
    client.set_authorization_override(AGENT)
    assert json.loads(recorder.requests[0].content) == {
        "enforce_client_authz": None,
        "additional_clients": [],
    }
    with pytest.raises(NotAuthorizedError):
        client.clear_authorization_override(AGENT)
    with pytest.raises(TypeError, match="not a str"):
        client.set_authorization_override(AGENT, additional_clients=CLIENT_B)
    # An id is one path segment, whatever it contains.
    assert client.get_authorization_override("../../audit") is None
    assert recorder.requests[-1].url.raw_path == b"/api/agents/..%2F..%2Faudit/authorization"


def test_verify_audit() -> None:
    broken = {
        "ok": False,
        "records_checked": 41,
        "head_seq": 42,
        "broken_at_seq": 17,
        "problem": "hash mismatch",
        "checked_at": "2026-01-01T00:00:00Z",
    }
    verification = answers(ok(broken)).client().verify_audit()
    assert (verification.ok, verification.broken_at_seq, verification.problem) == (
        False,
        17,
        "hash mismatch",
    )
    assert verification.records_checked == 41


def test_audit_checkpoints_are_kept_as_served() -> None:
    signed = {"seq": 7, "hash": "ab" * 32, "time": "2026-01-01T00:00:00Z", "signature": "c2ln"}
    recorder = answers(ok({"checkpoints": [signed, {**signed, "seq": 3}]}))
    assert recorder.client().audit_checkpoints(limit=2) == [signed, {**signed, "seq": 3}]
    assert recorder.requests[-1].url.path == "/api/audit/checkpoints"
    assert recorder.requests[-1].url.params["limit"] == "2"
    with pytest.raises(ValueError, match="limit"):
        recorder.client().audit_checkpoints(limit=0)
    for shape in ({"checkpoints": "none"}, {"checkpoints": [1]}, {}):
        with pytest.raises(UnexpectedResponseError):
            answers(ok(shape)).client().audit_checkpoints()


async def test_audit_checkpoints_async() -> None:
    recorder = answers(ok({"checkpoints": []}))
    async with recorder.async_client() as client:
        assert await client.audit_checkpoints() == []


def audit_record(seq: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "record_id": f"rec-{seq}",
        "occurred_at": "2026-01-01T00:00:00.5Z",
        "event": "session.start",
        "outcome": "granted",
        "status": 200,
        "reason": "pre-authorized",
        "request_id": f"req-{seq}",
        "actor_tenant_id": "tid",
        "actor_object_id": "oid",
        "actor_cwid": "alice",
        "client_app_id": CLIENT_A,
        "agent_id": AGENT,
        "room_name": None,
        "registration_id": None,
        "client_ip": "203.0.113.7",
        "details": {"session_id": "s", "metadata_bytes": 17},
        "prev_hash": "0" * 64,
        "hash": f"{seq:064x}",
        "schema": 2,  # unknown: ignored
    }


def paged_audit() -> Recorder:
    """Three pages of two records, linked by cursors 'c1' and 'c2'."""
    cursors = {None: ("c1", [1, 2]), "c1": ("c2", [3, 4]), "c2": (None, [5, 6])}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/audit"
        next_cursor, seqs = cursors[request.url.params.get("cursor")]
        return ok({"records": [audit_record(s) for s in seqs], "next_cursor": next_cursor})

    return Recorder(handler)


SINCE = datetime(2026, 1, 1, tzinfo=UTC)


def assert_paged(recorder: Recorder) -> None:
    sent = [dict(request.url.params) for request in recorder.requests]
    filters = {
        "event": "session.start",
        "agent_id": AGENT,
        "outcome": "denied",
        "since": "2026-01-01T00:00:00+00:00",
        "limit": "2",
    }
    assert sent == [filters, {**filters, "cursor": "c1"}, {**filters, "cursor": "c2"}]


def test_audit_records_follow_the_cursor() -> None:
    recorder = paged_audit()
    records = recorder.client().audit_records(
        event="session.start", agent_id=AGENT, outcome="denied", since=SINCE, page_size=2
    )
    assert recorder.requests == []  # nothing is fetched before iteration
    collected = list(records)
    assert [record.seq for record in collected] == [1, 2, 3, 4, 5, 6]
    assert_paged(recorder)
    first = collected[0]
    assert first.occurred_at == datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert first.details == {"session_id": "s", "metadata_bytes": 17}
    assert (first.room_name, first.client_ip) == (None, "203.0.113.7")


def test_audit_records_stop_early() -> None:
    recorder = paged_audit()
    records = recorder.client().audit_records(page_size=2)
    assert [next(records).seq for _ in range(3)] == [1, 2, 3]
    assert len(recorder.requests) == 2


async def test_async_audit_records_follow_the_cursor() -> None:
    recorder = paged_audit()
    async with recorder.async_client() as client:
        records = client.audit_records(
            event="session.start", agent_id=AGENT, outcome="denied", since=SINCE, page_size=2
        )
        assert [record.seq async for record in records] == [1, 2, 3, 4, 5, 6]
    assert_paged(recorder)


def test_audit_filters_are_checked_before_any_request() -> None:
    recorder = paged_audit()
    client = recorder.client()
    with pytest.raises(ValueError, match="timezone-aware"):
        client.audit_records(until=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="page_size"):
        client.audit_records(page_size=0)
    assert recorder.requests == []


async def test_async_admin_calls() -> None:
    recorder = answers(ok(AGENTS), ok(OVERRIDE), ok(OVERRIDE), httpx.Response(204))
    recorder_verify = answers(
        ok(
            {
                "ok": True,
                "records_checked": 3,
                "head_seq": 3,
                "broken_at_seq": None,
                "problem": None,
            }
        )
    )
    async with recorder.async_client() as client:
        assert [agent.agent_id for agent in await client.list_agents()] == [AGENT, AGENT_2]
        override = await client.get_authorization_override(AGENT)
        assert override is not None
        assert override.enforce_client_authz is True
        assert await client.set_authorization_override(AGENT, enforce_client_authz=True) == override
        await client.clear_authorization_override(AGENT)
    async with recorder_verify.async_client() as client:
        assert (await client.verify_audit()).ok is True


def test_retry_after_as_an_http_date() -> None:
    later = (datetime.now(UTC) + timedelta(seconds=120)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    recorder = answers(error(503, "service_unavailable", "Busy", **{"Retry-After": later}))
    with pytest.raises(ServiceUnavailableError) as caught:
        recorder.client().start_session(AGENT)
    assert caught.value.retry_after is not None
    assert 100 < caught.value.retry_after <= 120
