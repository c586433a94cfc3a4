"""CPU cost of CORS on a session start's middleware stack.

    python3 -m uv run python bench/cors.py

The request-id and metrics middleware around an endpoint that answers at once (as in
`bench/micro.py`), alone and with a CORS middleware inside them, as `create_app` places
it: LKPS's (`lkps.api.cors`) and, for comparison, Starlette's `CORSMiddleware` with the
same origins. Requests without `Origin` (every non-browser client) and from an allowed
origin. CPU µs per request (time.process_time), runs interleaved so that a shared
machine's load falls on all alike; each figure is the median of the runs minus the
median of the stack without CORS.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from typing import Any

from micro import _asgi_scope, cpu_us
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp

from lkps.api.cors import ALLOWED_REQUEST_HEADERS, EXPOSED_RESPONSE_HEADERS, CorsMiddleware
from lkps.api.metrics_middleware import MetricsMiddleware
from lkps.api.middleware import RequestIdMiddleware
from lkps.origins import parse_origins

ORIGINS = ["https://app.example.com", "https://ops.example.com:8443"]
ROUNDS, REPEAT = 7, 20_000


def main() -> None:
    route = Route("/api/session/start", endpoint=lambda request: None, methods=["POST"])
    body = b'{"room_name":"' + b"x" * 90 + b'","participant_token":"' + b"t" * 600 + b'"}'

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = route
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    def stack(cors: Callable[[ASGIApp], ASGIApp] | None) -> ASGIApp:
        inner: ASGIApp = endpoint if cors is None else cors(endpoint)
        return RequestIdMiddleware(MetricsMiddleware(inner))

    def requester(app: ASGIApp, *extra: tuple[bytes, bytes]) -> Callable[[], None]:
        def request() -> None:
            scope = _asgi_scope()
            scope["headers"] = [*scope["headers"], *extra]
            with contextlib.suppress(StopIteration):
                app(scope, receive, send).send(None)  # type: ignore[attr-defined]

        return request

    allowed, _ = parse_origins(ORIGINS, dev=False)
    lkps = stack(lambda app: CorsMiddleware(app, allowed))
    starlette = stack(
        lambda app: CORSMiddleware(
            app,
            allow_origins=ORIGINS,
            allow_methods=["POST"],
            allow_headers=ALLOWED_REQUEST_HEADERS.split(", "),
            expose_headers=EXPOSED_RESPONSE_HEADERS.split(", "),
        )
    )
    origin = (b"origin", ORIGINS[0].encode())
    cases = {
        "no CORS middleware (LKPS_CORS_ALLOW_ORIGINS empty)": requester(stack(None)),
        "LKPS CorsMiddleware, no Origin": requester(lkps),
        "Starlette CORSMiddleware, no Origin": requester(starlette),
        "LKPS CorsMiddleware, allowed Origin": requester(lkps, origin),
        "Starlette CORSMiddleware, allowed Origin": requester(starlette, origin),
    }
    runs: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, request in cases.items():
            runs[name].append(cpu_us(request, REPEAT))
    base = statistics.median(runs["no CORS middleware (LKPS_CORS_ALLOW_ORIGINS empty)"])
    print(f"CPU µs per request, median of {ROUNDS} interleaved runs of {REPEAT:,}")
    print(f"  {base:6.2f}          request id + metrics middleware, no CORS")
    for name, values in list(runs.items())[1:]:
        median = statistics.median(values)
        spread = f"{min(values) - base:+.2f}..{max(values) - base:+.2f}"
        print(f"  {median - base:+6.2f} ({spread})  {name}")


if __name__ == "__main__":
    main()
