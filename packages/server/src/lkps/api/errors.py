"""The one place errors become responses: `{"error", "message", "request_id"}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

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
    return error_response(request, exc.status_code, code, message, dict(exc.headers or {}))


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
