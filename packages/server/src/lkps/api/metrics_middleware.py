"""Request counts and latencies by route template."""

from __future__ import annotations

import time

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lkps.metrics import HTTP_LATENCY, HTTP_REQUESTS, Children


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    if isinstance(route, BaseRoute):
        return str(getattr(route, "path", "other"))
    return "unmatched"  # 404s and mounts: one label, whatever the path


# Both stay small, as the labels are bounded (methods, route templates, statuses).
_requests = Children(HTTP_REQUESTS)
_latencies = Children(HTTP_LATENCY)


def _record(method: str, route: str, status: int, seconds: float) -> None:
    _requests(method, route, str(status)).inc()
    _latencies(method, route).observe(seconds)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            _record(scope["method"], route_of(scope), status, time.perf_counter() - started)
