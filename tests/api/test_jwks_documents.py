"""Broken JWKS documents through the real app: the tenant's endpoint (the Entra double)
starts serving something that is not a key set. LKPS keeps its last good keys: tokens
signed with them keep working, an unknown `kid` gets 401 (never 500), and the background
refresh lives on and fetches again."""

from __future__ import annotations

import asyncio

import pytest

from lkps_testkit import SigningKey
from tests.conftest import API_AUDIENCE, CLIENT_A, FakeClock, Lkps

pytestmark = pytest.mark.api

BROKEN_DOCUMENTS = [
    b"[1,2,3]",
    b"null",
    b"not json",
    b'{"keys": "none"}',
    b'{"keys": [1, {"kty": "RSA", "kid": "x"}]}',
]


def token_of(lkps: Lkps, key: SigningKey) -> str:
    claims = lkps.entra.user_claims(audience=API_AUDIENCE, client_app_id=CLIENT_A)
    return lkps.entra.sign(claims, key=key)


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("document", BROKEN_DOCUMENTS, ids=lambda d: d.decode()[:20])
async def test_broken_jwks_keeps_the_last_good_keys(
    lkps: Lkps, clock: FakeClock, document: bytes
) -> None:
    assert (await lkps.register()).status_code == 200
    lkps.entra.jwks_body = document
    clock.advance(61)  # past the cooldown: the unknown kid may refresh
    fetched = lkps.entra.jwks_requests

    unknown = await lkps.start_session(token=token_of(lkps, SigningKey.generate()))
    assert unknown.status_code == 401, unknown.text
    assert unknown.json()["error"] == "invalid_token"
    assert lkps.entra.jwks_requests == fetched + 1  # it did look, and got the document
    assert (await lkps.start_session()).status_code == 200  # a known kid: still served

    # The background refresh is alive and fetches again when its next interval comes.
    refresh = lkps.services.background["lkps-jwks-refresh"]
    runs = refresh.runs
    refresh.wake()
    async with asyncio.timeout(30):
        await refresh.ran(runs + 1)
    assert refresh.alive and refresh.failures == 0
    assert lkps.entra.jwks_requests == fetched + 2
    ready = await lkps.http.get("/api/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["background_jobs"] == "ok"

    # Once the endpoint is fixed, a rotated key arrives with the next background refresh.
    rotated = SigningKey.generate()
    lkps.entra.jwks_body = None
    lkps.entra.keys.insert(0, rotated)
    refresh.wake()
    async with asyncio.timeout(30):
        await refresh.ran(runs + 2)
    assert lkps.entra.jwks_requests == fetched + 3
    assert (await lkps.start_session(token=token_of(lkps, rotated))).status_code == 200
