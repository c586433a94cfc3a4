"""What `LkpsClient` and `AsyncLkpsClient` share: configuration, request building,
response reading and the retry policy. The subclasses add only the I/O."""

from __future__ import annotations

import uuid
from typing import TypeVar

import httpx

from lkps_client._auth import AsyncAuth, SyncAuth
from lkps_client._calls import REQUEST_ID_HEADER, Call, read_response
from lkps_client._exceptions import (
    AuthenticationError,
    LkpsError,
    RateLimitedError,
    ServiceUnavailableError,
    TransportError,
)
from lkps_client._version import __version__

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
# The longest a retry waits. A 503 asking for longer is raised at once: retrying sooner
# than the server asked would only earn another 503, and the caller can decide.
MAX_RETRY_WAIT = 30.0
_BACKOFF_FIRST = 0.5  # transport errors and a 503 without Retry-After: 0.5 s, 1 s, 2 s, ...

USER_AGENT = f"lkps-client/{__version__}"


class BaseClient:
    _auth: SyncAuth | AsyncAuth

    def __init__(self, base_url: str, *, timeout: float, retries: int) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise ValueError(f"base_url must be an http(s) URL, not {base_url!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        # Joined by concatenation, so a base URL with a path (behind a gateway) keeps it.
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._retries = retries

    @property
    def base_url(self) -> str:
        return self._base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._base_url!r})"

    @staticmethod
    def _new_request_id() -> str:
        # Sent as X-Request-ID, which LKPS keeps: its logs and audit record then carry an
        # id we know even when no response arrives. Retries of one call share it.
        return uuid.uuid4().hex

    def _build_request(
        self,
        http: httpx.Client | httpx.AsyncClient,
        call: Call[T],
        token: str,
        request_id: str,
    ) -> httpx.Request:
        return http.build_request(
            call.method,
            self._base_url + call.path,
            params=call.params or None,
            json=call.body,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
                REQUEST_ID_HEADER: request_id,
            },
            timeout=self._timeout,
        )

    def _read_response(self, call: Call[T], response: httpx.Response, request_id: str) -> T:
        return read_response(call, response, request_id)

    def _transport_error(self, exc: httpx.RequestError, request_id: str) -> TransportError:
        if isinstance(exc, httpx.TimeoutException):
            code = "timeout"
            message = f"LKPS at {self._base_url} did not answer within {self._timeout:g} s"
        else:
            code = "transport_error"
            message = f"Could not reach LKPS at {self._base_url}: {exc or type(exc).__name__}"
        error = TransportError(None, code, message, request_id)
        error.__cause__ = exc
        return error

    def _after_failure(self, error: LkpsError, attempt: int) -> float | None:
        """Seconds to wait before trying again, or None to raise `error` now.

        Only a 503, a 429 and a transport error are retried: everything else would fail
        the same way again. A retried session start may leave an unused room name and an extra
        audit record behind; LiveKit creates rooms only when someone joins, so no room
        is left open.
        """
        if isinstance(error, AuthenticationError):
            # LKPS rejected the token: fetch a new one next time, even if it looks unexpired.
            self._auth.invalidate()
        if attempt >= self._retries:
            return None
        backoff = _BACKOFF_FIRST * 2.0 ** min(attempt, 16)
        if isinstance(error, ServiceUnavailableError | RateLimitedError):
            wait = error.retry_after if error.retry_after is not None else backoff
            return wait if wait <= MAX_RETRY_WAIT else None
        if isinstance(error, TransportError):
            return min(backoff, MAX_RETRY_WAIT)
        return None
