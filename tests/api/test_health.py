from __future__ import annotations

import gc
from typing import Any

import pytest

from lkps import __version__
from tests.api.util import running_lkps
from tests.conftest import FakeClock, Lkps

pytestmark = pytest.mark.api


async def test_health(lkps: Lkps) -> None:
    response = await lkps.http.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}
    assert response.headers["x-request-id"]


async def test_ready_when_everything_answers(lkps: Lkps) -> None:
    response = await lkps.http.get("/api/health/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {
        "store": "ok",
        "signing_keys": "ok",
        "authorization": "ok",
        "audit_writer": "ok",
        "background_jobs": "ok",
    }


async def test_not_ready_names_the_failing_check(lkps: Lkps, authz_file: Any) -> None:
    authz_file.unlink()
    response = await lkps.http.get("/api/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "not_ready"
    assert "authorization" in body["message"]
    assert body["checks"]["authorization"] == "failing"
    assert body["checks"]["store"] == "ok"


async def test_not_ready_without_signing_keys(
    settings_values: dict[str, Any], clock: FakeClock, entra: Any
) -> None:
    entra.jwks_available = False
    async with running_lkps(settings_values, clock, entra) as lkps:
        response = await lkps.http.get("/api/health/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["signing_keys"] == "failing"
        # Tokens cannot be checked either: refused, never waved through.
        assert (await lkps.start_session()).status_code == 401


async def test_unknown_route_gets_the_error_body(lkps: Lkps) -> None:
    response = await lkps.http.get("/api/nothing-here")
    assert response.status_code == 404
    assert set(response.json()) == {"error", "message", "request_id"}
    wrong_method = await lkps.http.get("/api/session/start")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"


async def test_hostile_request_id_is_replaced(lkps: Lkps) -> None:
    response = await lkps.http.get("/api/health", headers={"X-Request-ID": "<script>" + "x" * 100})
    assert response.headers["x-request-id"] != "<script>" + "x" * 100
    assert len(response.headers["x-request-id"]) == 32


async def test_openapi_documents_every_endpoint(lkps: Lkps) -> None:
    spec = (await lkps.http.get("/api/openapi.json")).json()
    assert set(spec["paths"]) >= {
        "/api/health",
        "/api/health/ready",
        "/api/session/start",
        "/api/agent/register",
        "/api/agent/heartbeat",
        "/api/agent/deregister",
    }
    start = spec["paths"]["/api/session/start"]["post"]
    assert (
        "agent_entra_app_id"
        in start["requestBody"]["content"]["application/json"]["schema"]["properties"]
    )
    assert {"400", "401", "403", "404", "413", "415", "500", "503"} <= set(start["responses"])


async def test_a_started_service_keeps_its_start_up_objects_out_of_the_collector(
    settings: Any, clock: FakeClock, entra: Any
) -> None:
    """Full collections under load walked everything start-up built (13% of a session
    start's CPU, the whole full-speed p99): a started LKPS freezes it, a stopped one
    hands it back."""
    gc.unfreeze()  # whatever an earlier test left frozen
    async with running_lkps(settings, clock, entra) as lkps:
        assert (await lkps.http.get("/api/health")).status_code == 200
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0
