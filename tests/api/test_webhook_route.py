"""`POST /api/livekit/webhook` as a caller sees it, to the byte: its answers and their
headers, its error bodies, the request id, the 405 for other methods, the metrics it
counts and its OpenAPI entry. The route is served off FastAPI's request handler
(`lkps.api.direct`); these pin what that must keep of how FastAPI served it."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import Depends
from fastapi.routing import APIRoute
from prometheus_client import REGISTRY
from starlette.requests import Request

from lkps.api.deps import ServicesDep, get_services
from lkps.api.direct import DirectRoute
from lkps.api.schemas import WebhookAnswer
from lkps.logs import JsonFormatter
from lkps.store.engine import UNAVAILABLE_MESSAGE
from tests.api.webhooks import event, signature, signed
from tests.conftest import FakeClock, Lkps

pytestmark = [pytest.mark.api, pytest.mark.backends("sqlite")]

WEBHOOK = "/api/livekit/webhook"
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
ERROR_HEADERS = ["x-request-id", "content-length", "content-type"]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def names(response: httpx.Response) -> list[str]:
    return [name.decode("latin-1").lower() for name, _ in response.headers.raw]


def assert_error(response: httpx.Response, status: int, code: str, message: str) -> None:
    """The contract's body, as `lkps.api.errors.error_response` renders it."""
    assert response.status_code == status, response.text
    request_id = response.headers["x-request-id"]
    expected = {"error": code, "message": message, "request_id": request_id}
    assert response.content == json.dumps(expected, separators=(",", ":")).encode()
    assert response.headers["content-type"] == "application/json"


def unfollowed(clock: FakeClock) -> tuple[str, dict[str, str]]:
    """A signed event LKPS verifies, counts and answers without reading further."""
    return signed(event("track_published", "a-room", created=clock.now(), identity="alice"))


async def test_a_verified_event_is_answered_as_fastapi_answered_it(
    lkps: Lkps, clock: FakeClock
) -> None:
    body, headers = unfollowed(clock)
    response = await lkps.http.post(WEBHOOK, content=body, headers=headers)
    assert response.status_code == 200
    assert response.content == b'{"applied":false}'
    assert names(response) == ["content-length", "content-type", "x-request-id"]
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == "17"
    assert GENERATED_ID.match(response.headers["x-request-id"])


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("gateway-id.1:2_3", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("no spaces", False),
        ("", False),
    ],
)
async def test_the_request_id_is_kept_or_replaced_on_answers_and_errors(
    lkps: Lkps, clock: FakeClock, incoming: str, kept: bool
) -> None:
    body, headers = unfollowed(clock)
    answered = await lkps.http.post(
        WEBHOOK, content=body, headers={**headers, "X-Request-ID": incoming}
    )
    refused = await lkps.http.post(WEBHOOK, content=body, headers={"X-Request-ID": incoming})
    for response in (answered, refused):
        request_id = response.headers["x-request-id"]
        assert request_id == incoming if kept else GENERATED_ID.match(request_id)
    assert refused.json()["request_id"] == refused.headers["x-request-id"]
    if not kept:
        assert answered.headers["x-request-id"] != refused.headers["x-request-id"]


async def test_refusals_carry_the_contract_error_body(lkps: Lkps, clock: FakeClock) -> None:
    body, _ = unfollowed(clock)
    unsigned = await lkps.http.post(WEBHOOK, content=body)
    assert_error(unsigned, 401, "invalid_token", "The access token is missing or invalid")
    assert names(unsigned) == ["www-authenticate", *ERROR_HEADERS]
    assert unsigned.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    garbage = "{not json"
    not_an_event = await lkps.http.post(
        WEBHOOK, content=garbage, headers={"Authorization": signature(garbage)}
    )
    assert_error(not_an_event, 400, "bad_request", "The webhook body is not a LiveKit event")
    assert names(not_an_event) == ERROR_HEADERS

    bad_length = await lkps.http.post(
        WEBHOOK, content=body, headers={"Authorization": signature(body), "Content-Length": "x"}
    )
    assert bad_length.status_code == 400


async def test_a_body_past_the_limit_is_413_declared_or_streamed(
    lkps: Lkps, clock: FakeClock
) -> None:
    too_large = b"x" * (256 * 1024 + 1)
    message = "The request body is larger than 262144 bytes"
    declared = await lkps.http.post(WEBHOOK, content=too_large)
    assert_error(declared, 413, "payload_too_large", message)
    assert names(declared) == ERROR_HEADERS

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * (64 * 1024)

    streamed = await lkps.http.post(WEBHOOK, content=chunks())
    assert "content-length" not in streamed.request.headers
    assert_error(streamed, 413, "payload_too_large", message)
    exactly = b" " * (256 * 1024)  # at the limit: read, then refused as no signed event
    assert (await lkps.http.post(WEBHOOK, content=exactly)).status_code == 401


async def test_a_store_that_cannot_commit_is_503_and_logged_with_the_request_id(
    lkps: Lkps, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    followed = event("participant_joined", "a-room", created=clock.now(), identity="alice")
    body, headers = signed(followed)
    await lkps.services.lifecycle.stop()
    caplog.handler.setFormatter(JsonFormatter())
    with caplog.at_level(logging.WARNING, logger="lkps.api.errors"):
        response = await lkps.http.post(
            WEBHOOK, content=body, headers={**headers, "X-Request-ID": "lb-42"}
        )
    await lkps.services.lifecycle.start()
    assert_error(response, 503, "service_unavailable", UNAVAILABLE_MESSAGE)
    assert response.headers["retry-after"] == "5"
    assert response.headers["x-request-id"] == "lb-42"
    lines = [json.loads(line) for line in caplog.text.splitlines()]
    assert [(line["message"], line["request_id"]) for line in lines] == [
        ("request failed: audit write failed: session step writer is not running", "lb-42")
    ]
    assert (await lkps.http.post(WEBHOOK, content=body, headers=headers)).json() == {
        "applied": False
    }


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
async def test_other_methods_are_405_allowing_post(lkps: Lkps, method: str) -> None:
    requests = sample("lkps_http_requests_total", method=method, route=WEBHOOK, status="405")
    response = await lkps.http.request(method, WEBHOOK, headers={"X-Request-ID": "m-1"})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["x-request-id"] == "m-1"
    if method != "HEAD":
        assert_error(response, 405, "method_not_allowed", "Method Not Allowed")
    after = sample("lkps_http_requests_total", method=method, route=WEBHOOK, status="405")
    assert after == requests + 1


async def test_paths_beside_the_route_are_not_it(lkps: Lkps, clock: FakeClock) -> None:
    body, headers = unfollowed(clock)
    for path in (WEBHOOK + "/", WEBHOOK + "s", "/api/livekit/webhook/x", "/API/livekit/webhook"):
        response = await lkps.http.post(path, content=body, headers=headers)
        assert response.status_code == 404, path
        assert set(response.json()) == {"error", "message", "request_id"}


async def test_requests_and_events_are_counted_under_the_route(
    lkps: Lkps, clock: FakeClock
) -> None:
    def counts() -> tuple[float, ...]:
        return (
            sample("lkps_http_requests_total", method="POST", route=WEBHOOK, status="200"),
            sample("lkps_http_requests_total", method="POST", route=WEBHOOK, status="401"),
            sample("lkps_http_request_duration_seconds_count", method="POST", route=WEBHOOK),
            sample("lkps_livekit_webhooks_total", event="track_published", result="ignored"),
            sample("lkps_livekit_webhooks_total", event="-", result="refused"),
        )

    before = counts()
    body, headers = unfollowed(clock)
    for _ in range(3):
        assert (await lkps.http.post(WEBHOOK, content=body, headers=headers)).status_code == 200
    assert (await lkps.http.post(WEBHOOK, content=body)).status_code == 401
    assert [after - start for after, start in zip(counts(), before, strict=True)] == [
        3,
        1,
        4,
        3,
        1,
    ]


async def test_openapi_documents_the_route_as_a_path_operation(lkps: Lkps) -> None:
    spec = (await lkps.http.get("/api/openapi.json")).json()
    item = spec["paths"][WEBHOOK]
    assert list(item) == ["post"]
    operation = item["post"]
    assert operation["operationId"] == "livekit_webhook_api_livekit_webhook_post"
    assert operation["summary"] == "Livekit Webhook"
    assert operation["tags"] == ["sessions"]
    assert operation["description"].startswith("LiveKit's webhooks (livekit-server")
    assert "requestBody" not in operation and "parameters" not in operation
    assert sorted(operation["responses"]) == ["200", "400", "401", "413", "503"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/WebhookAnswer"}
    assert spec["components"]["schemas"]["WebhookAnswer"]["properties"]["applied"]["type"] == (
        "boolean"
    )
    # Documented where its router is included: after the audit routes, before sessions.
    paths = list(spec["paths"])
    assert paths.index(WEBHOOK) == paths.index("/api/sessions/{session_id}") - 1


def test_the_route_is_the_first_tried(lkps: Lkps) -> None:
    """The direct route comes before every other route, included routers and all; the
    webhook's path operation, which documents it, stays where its router is included."""
    first, *rest = lkps.app.router.routes
    assert isinstance(first, DirectRoute) and first.path == WEBHOOK
    assert not any(isinstance(route, DirectRoute) for route in rest)


# DirectRoute serves only what it can serve as FastAPI would.


async def _request_and_services(request: Request, services: ServicesDep) -> WebhookAnswer:
    return WebhookAnswer(applied=True)


async def _with_query(request: Request, services: ServicesDep, q: str) -> WebhookAnswer:
    return WebhookAnswer(applied=bool(q))


async def _without_services(request: Request) -> WebhookAnswer:
    return WebhookAnswer(applied=True)


def _operation(endpoint: Any, **options: Any) -> APIRoute:
    return APIRoute("/x", endpoint, methods=["POST"], response_model=WebhookAnswer, **options)


def test_an_endpoint_of_the_request_and_the_services_qualifies() -> None:
    route = DirectRoute(_operation(_request_and_services))
    assert (route.path, route.methods) == ("/x", {"POST"})


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda: _operation(_with_query), id="a query parameter"),
        pytest.param(lambda: _operation(_without_services), id="no services"),
        pytest.param(
            lambda: _operation(_request_and_services, status_code=202), id="another status"
        ),
        pytest.param(
            lambda: _operation(_request_and_services, dependencies=[Depends(get_services)]),
            id="a route dependency",
        ),
    ],
)
def test_any_other_endpoint_is_refused_at_start_up(operation: Any) -> None:
    """An endpoint that gains a parameter, a dependency or another status cannot
    silently lose it on the direct path: building the route fails."""
    with pytest.raises(TypeError):
        DirectRoute(operation())


@pytest.fixture(autouse=True)
def _no_leftover_formatter(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    caplog.handler.setFormatter(logging.Formatter())
