"""The JWKS cache: cooldown, single-flight, last-good keys, rotation."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from jwt.algorithms import RSAAlgorithm

from lkps.identity.jwks import MAX_DOCUMENT_BYTES, MAX_KEYS, JwksCache, parse_signing_keys
from lkps_testkit import EntraDouble, SigningKey
from tests.conftest import FakeClock

pytestmark = pytest.mark.unit


@pytest.fixture
async def http(entra: EntraDouble) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=entra.asgi_app())) as client:
        yield client


@pytest.fixture
def cache(entra: EntraDouble, http: httpx.AsyncClient, clock: FakeClock) -> JwksCache:
    url = f"http://entra.test/{entra.tenant_id}/discovery/v2.0/keys"
    return JwksCache(url, http, clock, refresh_cooldown=60, refresh_interval=3600)


async def test_known_kid_is_served_from_memory(cache: JwksCache, entra: EntraDouble) -> None:
    await cache.refresh()
    for _ in range(10):
        assert await cache.get(entra.signing_key.kid) is not None
    assert entra.jwks_requests == 1


async def test_unknown_kids_refresh_at_most_once_per_cooldown(
    cache: JwksCache, entra: EntraDouble, clock: FakeClock
) -> None:
    await cache.refresh()
    for i in range(50):
        assert await cache.get(f"forged-{i}") is None
    assert entra.jwks_requests == 1  # inside the cooldown of the last fetch: none
    clock.advance(60)
    for i in range(50):
        assert await cache.get(f"forged-later-{i}") is None
    assert entra.jwks_requests == 2  # the first one refreshed; the other 49 did not
    clock.advance(59)
    assert await cache.get("forged-again") is None
    assert entra.jwks_requests == 2


async def test_concurrent_unknown_kids_share_one_fetch(
    cache: JwksCache, entra: EntraDouble
) -> None:
    results = await asyncio.gather(*(cache.get(f"kid-{i}") for i in range(200)))
    assert results == [None] * 200
    assert entra.jwks_requests == 1


async def test_rotated_key_is_picked_up_by_the_refresh_its_kid_triggers(
    cache: JwksCache, entra: EntraDouble, clock: FakeClock
) -> None:
    await cache.refresh()
    clock.advance(61)
    new_key = SigningKey.generate()
    entra.keys.insert(0, new_key)
    assert await cache.get(new_key.kid) is not None


async def test_failed_fetch_keeps_the_last_good_keys(
    cache: JwksCache, entra: EntraDouble, clock: FakeClock
) -> None:
    await cache.refresh()
    entra.jwks_available = False
    clock.advance(61)
    await cache.refresh()
    assert cache.failure_count == 1
    assert cache.loaded
    assert await cache.get(entra.signing_key.kid) is not None


async def test_unreachable_jwks_leaves_the_cache_unloaded(clock: FakeClock) -> None:
    async with httpx.AsyncClient() as http:
        cache = JwksCache("http://127.0.0.1:9/keys", http, clock, timeout=1)
        await cache.refresh()
    assert not cache.loaded and cache.failure_count == 1


def test_parse_skips_non_rsa_and_encryption_keys(entra: EntraDouble) -> None:
    rsa = entra.signing_key.public_jwk()
    document = {
        "keys": [
            rsa,
            {**rsa, "kid": "enc", "use": "enc"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "x", "y": "y"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            "not a key",
        ]
    }
    assert set(parse_signing_keys(document)) == {rsa["kid"]}


# Hostile and broken documents. The JWKS endpoint is outside LKPS: whatever it sends, the
# cache keeps its last good keys, an unknown `kid` is simply unknown (the caller's 401),
# and the warning it logs carries no part of the document.


class JwksEndpoint:
    """A JWKS endpoint that serves the tenant's keys until told to send something else."""

    def __init__(self, entra: EntraDouble) -> None:
        self.entra = entra
        self.respond: Callable[[], Awaitable[httpx.Response]] | None = None
        self.requests = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.respond is not None:
            return await self.respond()
        return httpx.Response(200, json=self.entra.jwks())


def body(
    content: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Callable[[], Awaitable[httpx.Response]]:
    async def respond() -> httpx.Response:
        return httpx.Response(status, content=content, headers=headers)

    return respond


def document(value: object) -> Callable[[], Awaitable[httpx.Response]]:
    return body(json.dumps(value).encode(), headers={"content-type": "application/json"})


def never_finishing_body() -> Callable[[], Awaitable[httpx.Response]]:
    """Headers at once, then a body that never completes (a slow-loris endpoint)."""

    async def stream() -> AsyncIterator[bytes]:
        yield b'{"keys": ['
        await asyncio.Event().wait()

    async def respond() -> httpx.Response:
        return httpx.Response(200, content=stream())

    return respond


def rsa_entry(**changes: object) -> dict[str, object]:
    """An RSA key entry of a key nobody has, with `changes` applied (None deletes)."""
    entry: dict[str, object] = dict(OTHER_KEY.public_jwk())
    for name, value in changes.items():
        if value is None:
            entry.pop(name, None)
        else:
            entry[name] = value
    return entry


OTHER_KEY = SigningKey.generate()
# The same key with its private members: a key set publishing one is broken.
PRIVATE_JWK: dict[str, object] = {
    **json.loads(RSAAlgorithm.to_jwk(OTHER_KEY.private_key)),
    "kid": OTHER_KEY.kid,
    "use": "sig",
}
HOSTILE_DOCUMENTS: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
    "not JSON": body(b"<html>Service Unavailable</html>"),
    "empty body": body(b""),
    "invalid UTF-8": body(b"\xff\xfe{\x00"),
    "JSON array": body(b"[1,2,3]"),
    "JSON number": body(b"42"),
    "JSON string": body(b'"keys"'),
    "JSON null": body(b"null"),
    "JSON true": body(b"true"),
    "deeply nested JSON": body(b"[" * 100_000 + b"]" * 100_000),
    "object without keys": document({"kid": OTHER_KEY.kid}),
    "keys is an object": document({"keys": {OTHER_KEY.kid: OTHER_KEY.public_jwk()}}),
    "keys is a string": document({"keys": "none"}),
    "keys is null": document({"keys": None}),
    "keys is empty": document({"keys": []}),
    "keys are not objects": document({"keys": [1, "key", None, [], True]}),
    "kid missing": document({"keys": [rsa_entry(kid=None)]}),
    "kid not a string": document({"keys": [rsa_entry(kid=7)]}),
    "kid empty": document({"keys": [rsa_entry(kid="")]}),
    "kty missing": document({"keys": [rsa_entry(kty=None)]}),
    "n missing": document({"keys": [rsa_entry(n=None)]}),
    "e missing": document({"keys": [rsa_entry(e=None)]}),
    "n a number": document({"keys": [rsa_entry(n=12345)]}),
    "n a list": document({"keys": [rsa_entry(n=["a"])]}),
    "n not base64url": document({"keys": [rsa_entry(n="!!not base64!!")]}),
    "e an object": document({"keys": [rsa_entry(e={"x": 1})]}),
    "use is enc": document({"keys": [rsa_entry(use="enc")]}),
    "a private key": document({"keys": [PRIVATE_JWK]}),
    "EC key": document(
        {"keys": [{"kty": "EC", "kid": OTHER_KEY.kid, "crv": "P-256", "x": "AA", "y": "AA"}]}
    ),
    "symmetric key": document({"keys": [{"kty": "oct", "kid": OTHER_KEY.kid, "k": "c2VjcmV0"}]}),
    "huge document": document(
        {"keys": [OTHER_KEY.public_jwk()], "padding": "x" * (MAX_DOCUMENT_BYTES + 1)}
    ),
    "HTTP 500": body(b'{"error": "server_error"}', 500),
    "HTTP 404": body(b"", 404),
    "HTTP 429": body(b"", 429, {"Retry-After": "3600"}),
    "redirect": body(b"", 302, {"location": "https://attacker.example/keys"}),
    "slow body": never_finishing_body(),
}


@pytest.mark.parametrize("shape", list(HOSTILE_DOCUMENTS))
async def test_hostile_document_keeps_the_last_good_keys(
    shape: str, entra: EntraDouble, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = JwksEndpoint(entra)
    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint)) as http:
        # Only the slow body needs the timeout to be short; generous for the rest.
        timeout = 1.0 if shape == "slow body" else 30.0
        cache = JwksCache(
            "http://entra.test/keys", http, clock, refresh_cooldown=60, timeout=timeout
        )
        await cache.refresh()
        assert cache.loaded
        endpoint.respond = HOSTILE_DOCUMENTS[shape]
        clock.advance(61)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="lkps.identity.jwks"):
            async with asyncio.timeout(30):  # a hang is a failure, not a stuck suite
                assert await cache.get(OTHER_KEY.kid) is None
                await cache.refresh()  # the background refresh: the same, and no raise
    assert endpoint.requests == 3
    assert cache.failure_count == 2
    assert await cache.get(entra.signing_key.kid) is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) >= 2
    logged = " ".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    for secret in (OTHER_KEY.public_jwk()["n"], str(PRIVATE_JWK["d"]), "attacker.example"):
        assert secret not in logged


def test_parse_reads_at_most_max_keys_entries(entra: EntraDouble) -> None:
    filler = [{"kty": "RSA", "kid": f"junk-{i}"} for i in range(MAX_KEYS)]
    assert parse_signing_keys({"keys": [*filler, entra.signing_key.public_jwk()]}) == {}
