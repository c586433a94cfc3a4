"""The one place errors become responses: `{"error", "message", "request_id"}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Match, Mount

from lkps.api.body import describe_validation_error
from lkps.api.middleware import REQUEST_ID_HEADER, request_id_of
from lkps.errors import LKPSError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "invalid_token",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, object] | None = None,
) -> JSONResponse:
    request_id = request_id_of(request.scope)
    return JSONResponse(
        {"error": code, "message": message, "request_id": request_id, **(extra or {})},
        status_code=status,
        headers={**(headers or {}), REQUEST_ID_HEADER: request_id},
    )


async def _lkps_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LKPSError)
    if exc.status_code >= 500:
        log.warning("request failed: %s", exc.reason, extra={"status": exc.status_code})
    return error_response(request, exc.status_code, exc.code, exc.message, exc.headers())


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else "Request failed"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        methods = allowed_methods(request)
        if methods:
            headers = {name: value for name, value in headers.items() if name.lower() != "allow"}
            headers["Allow"] = ", ".join(methods)
    return error_response(request, exc.status_code, code, message, headers)


# The methods a 405's `Allow` may name, in the order it names them.
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
# What a route's `matches` may read of a request: its path, and the method put in.
_PROBE_KEYS = ("type", "path", "raw_path", "root_path", "app_root_path", "headers")


def allowed_methods(request: Request) -> list[str]:
    """Every method the resource at the request's path supports, over all its routes.

    Starlette's 405 names only the methods of the first route whose path matched, so
    `PATCH /api/agents/{id}/authorization` was told `Allow: GET` although the resource
    also takes PUT and DELETE (RFC 9110 §15.5.6: the methods the target resource
    supports). Each method is asked of the application's routes, through the routing
    interface (`matches`) alone, on a copy of the request's scope. Mounted applications
    (`lkps dev`'s identity provider) take any method as far as routing can tell, and
    answer their own 405s: they are left out.
    """
    scope = request.scope
    base = {key: scope[key] for key in _PROBE_KEYS if key in scope}
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    return [
        method
        for method in _METHODS
        if any(route.matches({**base, "method": method})[0] is Match.FULL for route in routes)
    ]


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    message = describe_validation_error(errors[0]) if errors else "The request is invalid"
    return error_response(request, 400, "bad_request", message)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return error_response(request, 500, "internal_error", "Internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(LKPSError, _lkps_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
