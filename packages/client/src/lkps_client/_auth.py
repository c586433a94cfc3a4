"""Where the bearer token comes from: a credential, a fixed token, or a callable.

Credentials are duck-typed with Protocols matching azure-identity's `get_token`, so any
azure-identity credential works (DefaultAzureCredential, ClientSecretCredential,
ManagedIdentityCredential, ...) while azure-identity stays an optional extra, and a test
can pass a ten-line fake.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

__all__ = [
    "AccessTokenLike",
    "AsyncTokenCredential",
    "AsyncTokenProvider",
    "TokenCredential",
    "TokenProvider",
]

# A token is reused until this long before it expires, so it cannot expire in flight
# (and LKPS's 60 s clock-skew leeway is never needed).
REFRESH_MARGIN_SECONDS = 300.0


class AccessTokenLike(Protocol):
    """What `get_token` returns: azure-core's `AccessToken` (or anything shaped like it)."""

    @property
    def token(self) -> str: ...

    @property
    def expires_on(self) -> float:
        """Expiry as Unix seconds."""
        ...


class TokenCredential(Protocol):
    """azure-core's `TokenCredential`: `azure.identity.DefaultAzureCredential()` and kin."""

    def get_token(self, *scopes: str) -> AccessTokenLike: ...


class AsyncTokenCredential(Protocol):
    """azure-core's `AsyncTokenCredential`: the credentials in `azure.identity.aio`."""

    async def get_token(self, *scopes: str) -> AccessTokenLike: ...


TokenProvider = Callable[[], str]
"""Returns a bearer token; called before every request, so it may cache or not."""

AsyncTokenProvider = Callable[[], str | Awaitable[str]]
"""Like `TokenProvider`, for the async client: a plain or an async callable."""


def check_auth_arguments(
    credential: object | None,
    token: str | None,
    token_provider: object | None,
    scope: str | None,
) -> None:
    """Both clients' constructor rules, so they fail the same way. A `scope` beside a
    token is ignored rather than refused: callers that read both from configuration
    (a CLI's --token and --scope) need not sort them out first."""
    given = sum(source is not None for source in (credential, token, token_provider))
    if given != 1:
        raise TypeError("pass exactly one of credential=, token= or token_provider=")
    if credential is not None and not scope:
        # The scope decides the audience; guessing it would yield tokens LKPS rejects.
        raise TypeError("credential= needs scope= (e.g. 'api://<lkps-app-id-uri>/.default')")
    if token is not None and not token:
        raise ValueError("token= is empty")


class _TokenCache:
    """The one token a credential gave us, and whether it is still good to send."""

    def __init__(self) -> None:
        self._token: str | None = None
        self._expires_on = 0.0

    def get(self) -> str | None:
        if self._token is not None and time.time() < self._expires_on - REFRESH_MARGIN_SECONDS:
            return self._token
        return None

    def put(self, access: AccessTokenLike) -> str:
        self._token = _checked(access.token)
        self._expires_on = float(access.expires_on)
        return self._token

    def clear(self) -> None:
        self._token = None


def _checked(token: object) -> str:
    if not isinstance(token, str) or not token:
        raise TypeError(f"the token source returned {type(token).__name__}, not a token")
    return token


class SyncAuth:
    """The token source of `LkpsClient`; safe to share between threads."""

    def __init__(
        self,
        credential: TokenCredential | None,
        token: str | None,
        token_provider: TokenProvider | None,
        scope: str | None,
    ) -> None:
        check_auth_arguments(credential, token, token_provider, scope)
        self._credential = credential
        self._token = token
        self._provider = token_provider
        self._scope = scope or ""
        self._cache = _TokenCache()
        self._lock = threading.Lock()

    def token(self) -> str:
        if self._token is not None:
            return self._token
        if self._provider is not None:
            return _checked(self._provider())
        assert self._credential is not None
        with self._lock:  # one refresh for many threads, not one each
            return self._cache.get() or self._cache.put(self._credential.get_token(self._scope))

    def invalidate(self) -> None:
        """LKPS rejected the token (401): fetch a new one next time, even if unexpired."""
        self._cache.clear()


class AsyncAuth:
    """The token source of `AsyncLkpsClient`."""

    def __init__(
        self,
        credential: AsyncTokenCredential | None,
        token: str | None,
        token_provider: AsyncTokenProvider | None,
        scope: str | None,
    ) -> None:
        check_auth_arguments(credential, token, token_provider, scope)
        self._credential = credential
        self._token = token
        self._provider = token_provider
        self._scope = scope or ""
        self._cache = _TokenCache()
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if self._token is not None:
            return self._token
        if self._provider is not None:
            result = self._provider()
            return _checked(await result if inspect.isawaitable(result) else result)
        assert self._credential is not None
        async with self._lock:
            cached = self._cache.get()
            if cached is not None:
                return cached
            pending = self._credential.get_token(self._scope)
            if not inspect.isawaitable(pending):
                # A sync credential would block the event loop on its network calls.
                raise TypeError(
                    "AsyncLkpsClient needs an async credential (azure.identity.aio), not a sync one"
                )
            return self._cache.put(await pending)

    def invalidate(self) -> None:
        self._cache.clear()
