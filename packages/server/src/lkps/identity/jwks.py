"""The tenant's signing keys, cached the way Microsoft's key-rollover guidance asks.

Keys are held per `kid` and refreshed in the background. A token signed with a `kid`
we do not know may trigger one refresh, but at most one per cooldown and only one at a
time (single-flight), so a flood of forged `kid`s cannot turn into a flood of requests
to Entra. A failed fetch keeps the last good keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from lkps.clock import Clock
from lkps.metrics import JWKS_FETCHES

log = logging.getLogger(__name__)


class JwksUnavailable(Exception):
    """The key set could not be fetched or parsed."""


def parse_signing_keys(document: Mapping[str, Any]) -> dict[str, PyJWK]:
    """RSA signature keys of a JWKS document, by `kid`; anything else is skipped."""
    keys: dict[str, PyJWK] = {}
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise JwksUnavailable("JWKS document has no 'keys' list")
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or entry.get("kty") != "RSA":
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            keys[kid] = PyJWK(entry, algorithm="RS256")
        except (PyJWTError, ValueError):
            log.warning("skipping unusable JWKS key", extra={"kid": kid})
    return keys


class JwksCache:
    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        clock: Clock,
        *,
        refresh_cooldown: float = 60.0,
        refresh_interval: float = 3600.0,
        timeout: float = 5.0,
    ) -> None:
        self._url = url
        self._http = http
        self._clock = clock
        self._cooldown = refresh_cooldown
        self._interval = refresh_interval
        self._timeout = timeout
        self._keys: dict[str, PyJWK] = {}
        self._last_attempt: float | None = None
        self._inflight: asyncio.Task[None] | None = None
        self.fetch_count = 0
        self.failure_count = 0

    @property
    def loaded(self) -> bool:
        return bool(self._keys)

    async def get(self, kid: str) -> PyJWK | None:
        """The key for `kid`, refreshing once (within the cooldown) if it is unknown."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        if self._may_refresh():
            await self.refresh()
        return self._keys.get(kid)

    async def refresh(self) -> None:
        """Fetch the key set; concurrent callers share one request."""
        if self._inflight is None or self._inflight.done():
            self._last_attempt = self._clock.monotonic()
            self._inflight = asyncio.create_task(self._fetch())
        await asyncio.shield(self._inflight)

    def next_refresh_in(self) -> float:
        """When the background refresh should run next: after the interval while keys
        are loaded, after the cooldown while there are none."""
        return self._interval if self.loaded else self._cooldown

    def _may_refresh(self) -> bool:
        if self._inflight is not None and not self._inflight.done():
            return True  # join the fetch already under way
        if self._last_attempt is None:
            return True
        return self._clock.monotonic() - self._last_attempt >= self._cooldown

    async def _fetch(self) -> None:
        self.fetch_count += 1
        try:
            response = await self._http.get(self._url, timeout=self._timeout)
            response.raise_for_status()
            keys = parse_signing_keys(response.json())
        except (httpx.HTTPError, ValueError, TypeError, JwksUnavailable) as exc:
            self.failure_count += 1
            JWKS_FETCHES.labels("error").inc()
            log.warning(
                "JWKS fetch failed; keeping %d known keys",
                len(self._keys),
                extra={"jwks_url": self._url, "error": type(exc).__name__},
            )
            return
        if not keys:
            self.failure_count += 1
            JWKS_FETCHES.labels("no_keys").inc()
            log.warning("JWKS document has no usable RSA keys; keeping the known ones")
            return
        self._keys = keys
        JWKS_FETCHES.labels("ok").inc()
        log.info("JWKS refreshed", extra={"jwks_url": self._url, "key_count": len(keys)})
