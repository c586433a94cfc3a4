"""The JWKS cache: cooldown, single-flight, last-good keys, rotation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from lkps.identity.jwks import JwksCache, parse_signing_keys
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
