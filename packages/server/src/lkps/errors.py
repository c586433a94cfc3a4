"""One error base for everything LKPS tells a caller.

Domain code raises these; a single handler in `lkps.api.errors` renders them as the
contract's JSON body (`{"error", "message", "request_id"}`). Nothing else reaches a
caller, so no exception text or stack trace can leak.

    LKPSError
    ├── BadRequest            400
    ├── Unauthenticated       401  (adds WWW-Authenticate)
    ├── Forbidden             403
    ├── NotFound              404
    ├── PayloadTooLarge       413
    ├── UnsupportedMediaType  415
    ├── InternalError         500
    └── ServiceUnavailable    503  (adds Retry-After)
"""

from __future__ import annotations

from typing import ClassVar


class LKPSError(Exception):
    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # What the audit record and the log say; the caller only ever sees `message`.
        self.reason = reason or message

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(LKPSError):
    status_code = 400
    code = "bad_request"


class Unauthenticated(LKPSError):
    status_code = 401
    code = "invalid_token"

    def __init__(self, reason: str, *, kind: str | None = None) -> None:
        # One message for every token failure: the caller learns nothing it could use
        # to probe the validator; the reason goes to the audit record and the log.
        super().__init__("The access token is missing or invalid", reason=reason)
        # What failed, without anything the caller sent (a reason may quote a header's
        # value): rejected tokens are recorded per source and kind, at a bounded rate.
        self.kind = kind or reason

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class Forbidden(LKPSError):
    status_code = 403
    code = "forbidden"


class NotFound(LKPSError):
    status_code = 404
    code = "not_found"


class PayloadTooLarge(LKPSError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(LKPSError):
    status_code = 415
    code = "unsupported_media_type"


class InternalError(LKPSError):
    status_code = 500
    code = "internal_error"


class ServiceUnavailable(LKPSError):
    status_code = 503
    code = "service_unavailable"
    retry_after_seconds: ClassVar[int] = 5

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}
