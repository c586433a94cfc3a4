"""Liveness and readiness, unauthenticated, for probes."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from lkps import __version__
from lkps.api.deps import ServicesDep
from lkps.api.errors import error_response
from lkps.api.openapi import error_responses
from lkps.api.schemas import HealthResponse, ReadinessResponse

router = APIRouter(prefix="/api/health", tags=["health"])


@router.get("", response_model=HealthResponse)
async def health() -> HealthResponse:
    """200 while the process serves."""
    return HealthResponse(status="ok", version=__version__)


@router.get("/ready", response_model=ReadinessResponse, responses=error_responses(503))
async def ready(request: Request, services: ServicesDep) -> JSONResponse:
    """200 when the store answers, signing keys are loaded, authorization can answer and
    every background job still runs."""
    stopped = services.background.stopped()
    checks = {
        "store": await services.db.ping(),
        "signing_keys": services.jwks.loaded,
        "authorization": services.authorizer.source.ready(),
        "audit_writer": services.audit.running,
        "background_jobs": not stopped,
    }
    report = {name: "ok" if passed else "failing" for name, passed in checks.items()}
    failing = [name for name, passed in checks.items() if not passed]
    if failing:
        stopped_note = f" (stopped: {', '.join(stopped)})" if stopped else ""
        return error_response(
            request,
            503,
            "not_ready",
            f"Not ready: {', '.join(failing)} failing{stopped_note}",
            headers={"Retry-After": "5"},
            extra={"checks": report},
        )
    return JSONResponse({"status": "ready", "checks": report})
