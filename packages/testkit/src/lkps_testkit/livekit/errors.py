"""Errors a LiveKit service answers with, by code.

LiveKit's services raise psrpc errors whose codes are Twirp's codes; the same code
gives the Twirp JSON body (`{"code", "msg"}`) and the HTTP status, on the Twirp API
and on the double's own join endpoint alike.
"""

from __future__ import annotations

# Twirp's code -> HTTP status table (twirp spec v7, "Error codes").
HTTP_STATUS = {
    "canceled": 408,
    "unknown": 500,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
}


class HttpRefusal(Exception):
    """A refusal LiveKit writes as plain text before any protocol starts (its
    `HandleError`): bad tokens, missing grants at `/agent` and `/rtc`, bad join requests."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ServiceError(Exception):
    def __init__(self, code: str, message: str) -> None:
        if code not in HTTP_STATUS:
            raise ValueError(f"not a Twirp error code: {code}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]

    def body(self) -> dict[str, str]:
        return {"code": self.code, "msg": self.message}


# LiveKit's own errors (livekit-server pkg/service/errors.go, pkg/rtc/errors.go).
def room_not_found() -> ServiceError:
    return ServiceError("not_found", "requested room does not exist")


def participant_not_found() -> ServiceError:
    return ServiceError("not_found", "participant does not exist")


def room_full() -> ServiceError:
    return ServiceError("resource_exhausted", "room has exceeded its max participants")
