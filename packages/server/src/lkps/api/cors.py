"""CORS: pages on the origins in `LKPS_CORS_ALLOW_ORIGINS` may call the API from a browser.

Installed only when origins are configured (`create_app`), innermost of LKPS's
middleware: outside the error handlers, so a 401, 403, 404, 429 or 503 carries the
headers too and the page can read the error's body; inside the request-id and metrics
middleware, so preflights get an `X-Request-ID` and are counted.

- A request without `Origin` (every non-browser client) passes through untouched: one
  scan of the raw header list, as in `RequestIdMiddleware`.
- An allowed origin's request gets `Access-Control-Allow-Origin` (its origin),
  `Access-Control-Expose-Headers` (`X-Request-ID`, `Retry-After`) and `Vary: Origin`.
- An allowed origin's preflight (`OPTIONS` with `Access-Control-Request-Method`) is
  answered here with 204, the methods the path's routes take and the request headers LKPS
  reads. A path no route serves goes on to the application (its 404).
- Another origin's request passes through without CORS headers (the browser then hides
  the response from the page); its preflight is refused: 403, the contract's error body,
  no CORS headers.

No `Access-Control-Allow-Credentials`: the token travels in `Authorization`, which a
page sends explicitly (allowed by `Access-Control-Allow-Headers`); LKPS sets no cookies.

Starlette's `CORSMiddleware` was not used: it answers a refused preflight with a plain
text 400 that still lists the allowed methods and headers, and it builds a `Headers`
object on every request.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lkps.api.errors import allowed_methods, error_response
from lkps.origins import AllowedOrigins

# The request headers LKPS reads, and the response headers a page may read besides the
# CORS-safelisted ones (Content-Type among them).
ALLOWED_REQUEST_HEADERS = "Authorization, Content-Type, X-Request-ID"
EXPOSED_RESPONSE_HEADERS = "X-Request-ID, Retry-After"
# How long a browser may reuse a preflight's answer (Chromium caps it at 2 hours).
PREFLIGHT_MAX_AGE_SECONDS = 600

_ORIGIN = b"origin"
_REQUEST_METHOD = b"access-control-request-method"
_EXPOSE = (b"access-control-expose-headers", EXPOSED_RESPONSE_HEADERS.encode("latin-1"))
_VARY = (b"vary", b"Origin")


class CorsMiddleware:
    def __init__(self, app: ASGIApp, origins: AllowedOrigins) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = None
        for name, value in scope["headers"]:
            if name == _ORIGIN:
                origin = value
                break
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = self.origins.allows(origin)
        if scope["method"] == "OPTIONS" and any(
            name == _REQUEST_METHOD for name, _ in scope["headers"]
        ):
            await self._preflight(scope, receive, send, origin if allowed else None)
            return
        if not allowed:
            await self.app(scope, receive, send)
            return
        added = ((b"access-control-allow-origin", origin), _EXPOSE, _VARY)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *added]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(
        self, scope: Scope, receive: Receive, send: Send, origin: bytes | None
    ) -> None:
        """Answer a preflight from `origin` (None: an origin not allowed)."""
        request = Request(scope)
        response: Response
        if origin is None:
            response = error_response(
                request,
                403,
                "forbidden",
                "This page's origin may not call LKPS from a browser "
                "(it is not in LKPS_CORS_ALLOW_ORIGINS)",
            )
        else:
            methods = allowed_methods(request)
            if not methods:
                await self.app(scope, receive, send)
                return
            response = Response(
                status_code=204,
                headers={
                    "Access-Control-Allow-Origin": origin.decode("latin-1"),
                    "Access-Control-Allow-Methods": ", ".join(methods),
                    "Access-Control-Allow-Headers": ALLOWED_REQUEST_HEADERS,
                    "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
                    "Vary": "Origin",
                },
            )
        await response(scope, receive, send)
