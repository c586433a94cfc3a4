"""The ASGI application."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager

import httpx
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.types import ASGIApp

from lkps import __version__
from lkps.api import admin, agents, audit, gateway, health, lifecycle, sessions
from lkps.api.body import JsonBodies
from lkps.api.cors import CorsMiddleware
from lkps.api.direct import DirectRoute
from lkps.api.docs import install_docs
from lkps.api.errors import install_error_handlers
from lkps.api.metrics_middleware import MetricsMiddleware
from lkps.api.middleware import RequestIdMiddleware
from lkps.api.openapi import install_openapi
from lkps.authorization import AuthorizationSource
from lkps.clock import Clock
from lkps.config import Settings
from lkps.services import running_services


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    jwks_transport: httpx.AsyncBaseTransport | None = None,
    mounts: Mapping[str, ASGIApp] | None = None,
    authorization_source: AuthorizationSource | None = None,
) -> FastAPI:
    """Build LKPS. `jwks_transport` and `mounts` exist for `lkps dev`, which serves its
    development identity provider from the same process; `authorization_source`
    replaces the configured one (tests, embedding)."""
    cors_origins = settings.cors_origins()  # before anything starts: refuses bad entries

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_services(
            settings,
            clock=clock,
            jwks_transport=jwks_transport,
            authorization_source=authorization_source,
        ) as services:
            app.state.services = services
            with settled_heap():
                yield

    app = FastAPI(
        title="LiveKit Platform Service",
        version=__version__,
        summary="Entra ID-authenticated LiveKit sessions and agent registration",
        lifespan=lifespan,
        docs_url=None,  # lkps.api.docs serves Swagger UI from the package, not a CDN
        redoc_url=None,
        openapi_url="/api/openapi.json",
        # No 307 to "the same path without its slash" (built from the caller's Host).
        redirect_slashes=False,
        telemetry=native_telemetry(os.environ),
    )
    app.state.bodies = JsonBodies(max_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    install_openapi(app)
    install_docs(app)
    if cors_origins:  # without browser origins, nothing on the request path
        app.add_middleware(CorsMiddleware, origins=cors_origins)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    # LiveKit's webhooks, the busiest route: the first route tried, and off FastAPI's
    # request handler (lkps.api.direct); documented where lifecycle.router is included.
    app.router.routes.insert(0, DirectRoute.of(lifecycle.router, lifecycle.livekit_webhook))
    for router in (health.router, sessions.router, agents.router, admin.router, audit.router):
        app.include_router(router)
    app.include_router(gateway.router)
    app.include_router(lifecycle.router)
    for path, mounted in (mounts or {}).items():
        app.mount(path, mounted)
    return app


@contextmanager
def settled_heap() -> Iterator[None]:
    """Take what start-up built (modules, routes, models, pools) out of the cyclic
    garbage collector's view, once the service is ready to serve.

    Each request leaves garbage that triggers collections, and now and then a full one,
    which walked every long-lived object of the process (~150 MB here): measured, that
    was 13% of a session start's CPU and the whole of the p99 at full speed (163 ms,
    49 ms without). Frozen objects are still freed by reference counting; cycles among
    them (start-up's own garbage included) wait until shutdown hands everything back,
    which matters to a process that starts and stops many applications (tests). Both
    steps are O(1): no collection runs here.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def native_telemetry(environ: Mapping[str, str]) -> TelemetryConfig:
    """FastAPI's built-in OpenTelemetry, decided once at start-up.

    Left on, FastAPI asks on every request whether a tracer, meter or logger provider is
    configured, and the answer reads the process environment each time: measured at ~4%
    of a session start's CPU, for an instrumentation LKPS does not use (it reports through
    Prometheus). With any `OTEL_*` variable (or FASTAPI_OTEL_AUTO_CONFIGURE) set when LKPS
    starts, it stays on as FastAPI ships it.
    """
    if any(name.startswith("OTEL_") for name in environ) or environ.get(
        "FASTAPI_OTEL_AUTO_CONFIGURE"
    ):
        return {}
    return {"tracing": False, "metrics": False, "logs": False}
