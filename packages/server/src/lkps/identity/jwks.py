"""The tenant's signing keys, cached the way Microsoft's key-rollover guidance asks.

Keys are held per `kid` and refreshed in the background. A token signed with a `kid`
we do not know may trigger one refresh, but at most one per cooldown and only one at a
time (single-flight), so a flood of forged `kid`s cannot turn into a flood of requests
to Entra. A failed fetch keeps the last good keys.
"""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
from jwt import PyJWK

from lkps.clock import Clock
from lkps.metrics import JWKS_FETCHES

log = logging.getLogger(__name__)


class JwksUnavailable(Exception):
    """The key set could not be fetched or parsed."""


# Entra publishes a handful of keys in a few kilobytes; anything far larger is not a key
# set LKPS should hold in memory or spend the event loop parsing.
MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_KEYS = 100


def parse_signing_keys(document: object) -> dict[str, PyJWK]:
    """RSA signature keys of a JWKS document, by `kid`; any other entry is skipped.

    `document` is whatever the JSON parser returned, so any shape is met here: what is
    not an object with a `keys` list raises `JwksUnavailable`; an entry that is not a
    usable public RSA signature key is skipped (and counted in one warning, without the
    entry's contents)."""
    if not isinstance(document, dict):
        raise JwksUnavailable(f"JWKS document is a JSON {_json_type(document)}, not an object")
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise JwksUnavailable("JWKS document has no 'keys' list")
    keys: dict[str, PyJWK] = {}
    skipped = 0
    for entry in entries[:MAX_KEYS]:
        usable = _signing_key(entry)
        if usable is None:
            skipped += 1
        else:
            kid, key = usable
            keys[kid] = key
    if skipped or len(entries) > MAX_KEYS:
        log.warning(
            "JWKS document: %d of %d entries are not usable RSA signature keys%s",
            skipped,
            min(len(entries), MAX_KEYS),
            f"; {len(entries) - MAX_KEYS} entries beyond the first {MAX_KEYS} ignored"
            if len(entries) > MAX_KEYS
            else "",
        )
    return keys


def _signing_key(entry: object) -> tuple[str, PyJWK] | None:
    """The `kid` and public RSA signature key an entry describes, or None."""
    if not isinstance(entry, dict):
        return None
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid or entry.get("kty") != "RSA":
        return None
    if entry.get("use", "sig") != "sig":
        return None
    if "d" in entry:  # a private key has no place in a published key set
        return None
    try:
        return kid, PyJWK(entry, algorithm="RS256")
    except Exception:  # any malformed member: PyJWTError, ValueError, TypeError, ...
        return None


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


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
        """One fetch; never raises (but for cancellation): whatever the endpoint sends,
        a failure keeps the last good keys and is logged without the document's contents."""
        self.fetch_count += 1
        try:
            async with asyncio.timeout(self._timeout):
                document = await self._download()
            keys = parse_signing_keys(document)
        except Exception as exc:  # the endpoint is outside LKPS: any shape, any failure
            self._failed("error", exc)
            return
        if not keys:
            self._failed("no_keys", None)
            return
        self._keys = keys
        JWKS_FETCHES.labels("ok").inc()
        log.info("JWKS refreshed", extra={"jwks_url": self._url, "key_count": len(keys)})

    async def _download(self) -> object:
        """The parsed JSON document, read up to `MAX_DOCUMENT_BYTES` (a redirect or an
        HTTP error status raises)."""
        async with self._http.stream("GET", self._url, timeout=self._timeout) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise JwksUnavailable(f"JWKS document exceeds {MAX_DOCUMENT_BYTES} bytes")
        return json.loads(body)

    def _failed(self, outcome: str, exc: Exception | None) -> None:
        self.failure_count += 1
        JWKS_FETCHES.labels(outcome).inc()
        reason = (
            "no usable RSA signature keys"
            if exc is None
            else str(exc)
            if isinstance(exc, JwksUnavailable)
            else type(exc).__name__
        )
        log.warning(
            "JWKS fetch failed (%s); keeping the %d known keys",
            reason,
            len(self._keys),
            extra={"jwks_url": self._url, "error": reason},
        )
