"""Everything the client raises is an `LkpsError`.

LKPS answers every failure with the contract body `{"error", "message", "request_id"}`;
each status becomes its own class so callers can `except` the case they can act on (an
agent that is not connected, a client app that is not pre-authorized) without parsing
messages. Network failures are `LkpsError`s too, so one `except LkpsError` covers every
way a call can fail, and no httpx exception type is part of this library's interface.

    LkpsError
    ├── TransportError               no response: connection failed, timed out, ...
    ├── UnexpectedResponseError      a success status whose body is not the documented shape
    ├── BadRequestError          400
    ├── AuthenticationError      401  the access token is missing or invalid
    ├── NotAuthorizedError       403  the client app (or caller) may not do this
    ├── NotFoundError            404
    │   └── AgentNotConnectedError    404 from start_session: the agent is not registered
    ├── PayloadTooLargeError     413
    └── ServerError              5xx
        └── ServiceUnavailableError  503  (retry_after from Retry-After)

Any other status (405, 415, 429, ...) raises `LkpsError` itself.
"""

from __future__ import annotations

__all__ = [
    "AgentNotConnectedError",
    "AuthenticationError",
    "BadRequestError",
    "LkpsError",
    "NotAuthorizedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ServerError",
    "ServiceUnavailableError",
    "TransportError",
    "UnexpectedResponseError",
]


class LkpsError(Exception):
    """A call to LKPS failed.

    `status_code` is the HTTP status (None when no response arrived), `code` and
    `message` come from the contract body (or are generic when the body was not LKPS's,
    e.g. a gateway's HTML page), and `request_id` is the `X-Request-ID` LKPS logged and
    audited the request under: quote it when asking the LKPS operators about a failure.
    """

    def __init__(
        self, status_code: int | None, code: str, message: str, request_id: str | None
    ) -> None:
        super().__init__(status_code, code, message, request_id)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        status = "no response" if self.status_code is None else f"HTTP {self.status_code}"
        return f"{self.message} ({status}, request id {self.request_id or 'unknown'})"


class TransportError(LkpsError):
    """No HTTP response: the connection failed or was reset, or the timeout elapsed.

    The underlying error is kept as `__cause__` for debugging. `request_id` is the id
    this client sent, so if the request did reach LKPS its logs can still be found.
    """


class UnexpectedResponseError(LkpsError):
    """LKPS answered with success, but the body is not what the API documents.

    Usually the base URL points at something that is not LKPS (a login page behind a
    proxy, say), or at an LKPS too old to serve the endpoint.
    """


class BadRequestError(LkpsError):
    """400: the request body or a parameter was rejected; `message` says which rule."""


class AuthenticationError(LkpsError):
    """401: the access token is missing, expired, for the wrong audience or forged.

    LKPS deliberately gives one message for every token problem; the precise reason is in
    its audit record under `request_id`. Check the scope your credential asks for.
    """


class NotAuthorizedError(LkpsError):
    """403: the caller is authenticated but not allowed.

    From `start_session`: the agent enforces client authorization and your client app is
    not pre-authorized for it ("You are not authorized to access this agent"). From the
    administration and audit methods: the token lacks the `LKPS.Admin` or `LKPS.Auditor`
    app role.
    """


class NotFoundError(LkpsError):
    """404: the resource does not exist (or the base URL has no such endpoint)."""


class AgentNotConnectedError(NotFoundError):
    """404 from `start_session`: the agent is not registered, deregistered, or its
    registration lapsed. Nothing is wrong with the request; the agent must be running."""


class RegistrationGoneError(NotFoundError):
    """404 from `agent_heartbeat`: the registration lapsed (no heartbeat within the
    presence TTL) or was deregistered. The agent must register again."""


class PayloadTooLargeError(LkpsError):
    """413: the request body exceeded LKPS's size limit (64 KiB by default)."""


class _WaitAndRetry(LkpsError):
    """An answer that says when to try again: `retry_after` is the `Retry-After` header
    in seconds (None when absent)."""

    def __init__(
        self,
        status_code: int | None,
        code: str,
        message: str,
        request_id: str | None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status_code, code, message, request_id)
        self.retry_after = retry_after


class RateLimitedError(_WaitAndRetry):
    """429: this client app, user or agent sent more requests than LKPS's rate limit
    allows. A client built with `retries=` waits `retry_after` and tries again."""


class ServerError(LkpsError):
    """5xx: LKPS (or a gateway in front of it) failed; the message carries no detail by
    design. `request_id` is what the LKPS operators need to find the cause."""


class ServiceUnavailableError(ServerError, _WaitAndRetry):
    """503: a dependency of LKPS (its audit store, the authorization source) is down.

    LKPS refuses rather than grants without an audit record. `retry_after` is the
    `Retry-After` header in seconds (None when absent); a client built with `retries=`
    waits that long and tries again on its own.
    """
