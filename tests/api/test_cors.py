"""CORS (`LKPS_CORS_ALLOW_ORIGINS`): preflights, headers on answers and on errors, and
nothing at all when no origin is configured. A real browser: tests/e2e/test_browser_cors.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from lkps.api.cors import CorsMiddleware
from lkps_testkit import EntraDouble
from tests.api.util import running_lkps
from tests.backends import StoreSql
from tests.conftest import AGENT, CLIENT_B, FakeClock, Lkps

pytestmark = [pytest.mark.api, pytest.mark.backends("sqlite")]

PAGE = "https://app.example.com"
OTHER_PAGE = "https://evil.example.net"


def preflight_headers(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type,x-request-id",
    }


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {
        name: value
        for name, value in response.headers.items()
        if name.startswith("access-control-") or name == "vary"
    }


def assert_readable_by(response: httpx.Response, origin: str) -> None:
    """What a browser needs to hand `response` to a page on `origin`, headers included."""
    assert response.headers["access-control-allow-origin"] == origin
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert exposed == {"x-request-id", "retry-after"}
    assert "Origin" in response.headers.get_list("vary")
    assert "access-control-allow-credentials" not in response.headers


def assert_contract_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert body["request_id"] == response.headers["x-request-id"]


@pytest.fixture
def cors_values(settings_values: dict[str, Any]) -> dict[str, Any]:
    return {**settings_values, "cors_allow_origins": f"{PAGE}, https://other.example.com:8443"}


@pytest.fixture
async def lkps_cors(
    cors_values: dict[str, Any], clock: FakeClock, entra: EntraDouble
) -> AsyncIterator[Lkps]:
    async with running_lkps(cors_values, clock, entra) as lkps:
        yield lkps


async def test_preflight_from_an_allowed_origin_names_the_routes_methods_and_headers(
    lkps_cors: Lkps,
) -> None:
    response = await lkps_cors.http.options("/api/session/start", headers=preflight_headers(PAGE))
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == PAGE
    assert response.headers["access-control-allow-methods"] == "POST"
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert allowed == {"Authorization", "Content-Type", "X-Request-ID"}
    assert int(response.headers["access-control-max-age"]) > 0
    assert response.headers["vary"] == "Origin"
    assert response.headers["x-request-id"]
    assert response.content == b""

    resource = f"/api/agents/{AGENT}/authorization"
    response = await lkps_cors.http.options(resource, headers=preflight_headers(PAGE, "PUT"))
    assert response.status_code == 204
    assert response.headers["access-control-allow-methods"] == "GET, PUT, DELETE"

    second = "https://other.example.com:8443"
    response = await lkps_cors.http.options("/api/health/ready", headers=preflight_headers(second))
    assert (response.status_code, response.headers["access-control-allow-origin"]) == (204, second)


@pytest.mark.parametrize(
    "origin",
    [
        OTHER_PAGE,
        "null",  # sandboxed iframes, file: pages
        "https://app.example.com.evil.example.net",
        "https://app.example.com:443",  # not how a browser writes it: no match
        "http://app.example.com",
        "HTTPS://APP.EXAMPLE.COM",
        "https://other.example.com",  # the allowed one is on :8443
        "",
        "\x7f\xff*",
    ],
)
async def test_preflight_from_any_other_origin_is_refused_without_allow_headers(
    lkps_cors: Lkps, origin: str
) -> None:
    headers = {**preflight_headers("x"), "Origin": origin}
    raw = {name.encode(): value.encode("latin-1") for name, value in headers.items()}
    response = await lkps_cors.http.options("/api/session/start", headers=raw)
    assert_contract_error(response, 403, "forbidden")
    assert "LKPS_CORS_ALLOW_ORIGINS" in response.json()["message"]
    assert cors_headers(response) == {}


async def test_preflight_for_a_path_without_routes_gets_the_404_and_no_allow_headers(
    lkps_cors: Lkps,
) -> None:
    response = await lkps_cors.http.options("/api/nothing/here", headers=preflight_headers(PAGE))
    assert_contract_error(response, 404, "not_found")
    assert cors_headers(response) == {}


async def test_session_start_from_an_allowed_origin_is_readable(lkps_cors: Lkps) -> None:
    await lkps_cors.register()
    response = await lkps_cors.http.post(
        "/api/session/start",
        json={"agent_entra_app_id": AGENT},
        headers={"Authorization": f"Bearer {lkps_cors.user_token()}", "Origin": PAGE},
    )
    assert response.status_code == 200, response.text
    assert response.json()["participant_token"]
    assert_readable_by(response, PAGE)


async def test_errors_are_readable_by_an_allowed_origin(
    cors_values: dict[str, Any], clock: FakeClock, entra: EntraDouble, store_sql: StoreSql
) -> None:
    values = {**cors_values, "rate_limit_session_per_user": 1}
    async with running_lkps(values, clock, entra) as lkps:
        origin = {"Origin": PAGE}
        start = "/api/session/start"
        body = {"agent_entra_app_id": AGENT}
        response = await lkps.http.post(start, json=body, headers=origin)
        assert_contract_error(response, 401, "invalid_token")
        assert_readable_by(response, PAGE)

        await lkps.register()
        forbidden = {"Authorization": f"Bearer {lkps.user_token(client=CLIENT_B)}", **origin}
        response = await lkps.http.post(start, json=body, headers=forbidden)
        assert response.status_code == 403, response.text
        assert_readable_by(response, PAGE)

        response = await lkps.http.get("/api/nothing/here", headers=origin)
        assert_contract_error(response, 404, "not_found")
        assert_readable_by(response, PAGE)

        carol = {"Authorization": f"Bearer {lkps.user_token('carol')}", **origin}
        assert (await lkps.http.post(start, json=body, headers=carol)).status_code == 200
        response = await lkps.http.post(start, json=body, headers=carol)
        assert_contract_error(response, 429, "rate_limited")
        assert response.headers["retry-after"]
        assert_readable_by(response, PAGE)

        await store_sql.execute("DROP TABLE audit_records")
        bob = {"Authorization": f"Bearer {lkps.user_token('bob')}", **origin}
        response = await lkps.http.post(start, json=body, headers=bob)
        assert_contract_error(response, 503, "service_unavailable")
        assert_readable_by(response, PAGE)


async def test_requests_from_other_origins_are_served_without_cors_headers(
    lkps_cors: Lkps,
) -> None:
    """The browser, not LKPS, keeps the answer from the page; non-browser callers that
    send an `Origin` of their own are served as ever."""
    response = await lkps_cors.http.get("/api/health", headers={"Origin": OTHER_PAGE})
    assert response.status_code == 200
    assert cors_headers(response) == {}
    response = await lkps_cors.http.get("/api/health")
    assert response.status_code == 200
    assert cors_headers(response) == {}


async def test_without_origins_configured_nothing_changes(
    settings_values: dict[str, Any], clock: FakeClock, entra: EntraDouble
) -> None:
    async with running_lkps(settings_values, clock, entra) as lkps:
        layers: list[object] = [middleware.cls for middleware in lkps.app.user_middleware]
        assert CorsMiddleware not in layers
        response = await lkps.http.options("/api/session/start", headers=preflight_headers(PAGE))
        assert_contract_error(response, 405, "method_not_allowed")
        assert cors_headers(response) == {}
        response = await lkps.http.get("/api/health", headers={"Origin": PAGE})
        assert cors_headers(response) == {}
