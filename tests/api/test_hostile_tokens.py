"""Every token LKPS must refuse, each its own case, each a 401 with the contract's body."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable

import pytest

from lkps.config import DEV_AUDIENCE, DEV_TENANT_ID
from lkps_testkit import EntraDouble, SigningKey
from tests.conftest import API_AUDIENCE, CLIENT_A, FakeClock, Lkps

pytestmark = pytest.mark.api

TokenFactory = Callable[[EntraDouble, SigningKey], str]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(entra: EntraDouble, **overrides: object) -> dict[str, object]:
    claims = entra.user_claims(audience=API_AUDIENCE, client_app_id=CLIENT_A)
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def signed_by_another_key_with_our_kid(entra: EntraDouble, other: SigningKey) -> str:
    forged = SigningKey(other.private_key, entra.signing_key.kid)
    return entra.sign(_claims(entra), key=forged)


def alg_none(entra: EntraDouble, other: SigningKey) -> str:
    header = {"typ": "JWT", "alg": "none", "kid": entra.signing_key.kid}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(entra)).encode())}."


def hs256_with_the_public_key(entra: EntraDouble, other: SigningKey) -> str:
    header = {"typ": "JWT", "alg": "HS256", "kid": entra.signing_key.kid}
    signing_input = (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(entra)).encode())}"
    )
    mac = hmac.new(entra.signing_key.public_pem(), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{_b64(mac.digest())}"


def unknown_kid(entra: EntraDouble, other: SigningKey) -> str:
    return entra.sign(_claims(entra), key=other)


def wrong_issuer(entra: EntraDouble, other: SigningKey) -> str:
    return entra.sign(_claims(entra, iss=f"https://login.microsoftonline.com/{uuid.uuid4()}/v2.0"))


def other_tenant(entra: EntraDouble, other: SigningKey) -> str:
    tenant = str(uuid.uuid4())
    return entra.sign(
        _claims(entra, tid=tenant, iss=f"https://login.microsoftonline.com/{tenant}/v2.0")
    )


def our_issuer_other_tid(entra: EntraDouble, other: SigningKey) -> str:
    return entra.sign(_claims(entra, tid=str(uuid.uuid4())))


def wrong_audience(entra: EntraDouble, other: SigningKey) -> str:
    return entra.sign(_claims(entra, aud="api://some-other-api"))


def expired(entra: EntraDouble, other: SigningKey) -> str:
    now = int(time.time())
    return entra.sign(_claims(entra, iat=now - 3700, nbf=now - 3700, exp=now - 61))


def not_yet_valid(entra: EntraDouble, other: SigningKey) -> str:
    now = int(time.time())
    return entra.sign(_claims(entra, iat=now, nbf=now + 300, exp=now + 3600))


def missing_exp(entra: EntraDouble, other: SigningKey) -> str:
    claims = _claims(entra)
    del claims["exp"]
    return entra.sign(claims)


def v1_from_another_tenant(entra: EntraDouble, other: SigningKey) -> str:
    tenant = str(uuid.uuid4())
    claims = entra.user_claims(audience=API_AUDIENCE, client_app_id=CLIENT_A, version="1.0")
    claims.update(tid=tenant, iss=f"https://sts.windows.net/{tenant}/")
    return entra.sign(claims)


def dev_identity_provider_token(entra: EntraDouble, other: SigningKey) -> str:
    dev = EntraDouble(tenant_id=DEV_TENANT_ID, keys=[other])
    return dev.user_token(audience=DEV_AUDIENCE, client_app_id=CLIENT_A)


def tampered_payload(entra: EntraDouble, other: SigningKey) -> str:
    header, _, signature = entra.sign(_claims(entra)).split(".")
    payload = _b64(json.dumps(_claims(entra, preferred_username="admin@contoso.example")).encode())
    return f"{header}.{payload}.{signature}"


def garbage(entra: EntraDouble, other: SigningKey) -> str:
    return "this.is.not-a-jwt"


def not_even_dotted(entra: EntraDouble, other: SigningKey) -> str:
    return "garbage"


HOSTILE: list[TokenFactory] = [
    signed_by_another_key_with_our_kid,
    alg_none,
    hs256_with_the_public_key,
    unknown_kid,
    wrong_issuer,
    other_tenant,
    our_issuer_other_tid,
    wrong_audience,
    expired,
    not_yet_valid,
    missing_exp,
    v1_from_another_tenant,
    dev_identity_provider_token,
    tampered_payload,
    garbage,
    not_even_dotted,
]


@pytest.mark.parametrize("make_token", HOSTILE, ids=[f.__name__ for f in HOSTILE])
@pytest.mark.parametrize("path", ["/api/session/start", "/api/agent/register"])
async def test_hostile_token_is_401(
    lkps: Lkps, other_key: SigningKey, make_token: TokenFactory, path: str
) -> None:
    response = await lkps.post(
        path, make_token(lkps.entra, other_key), {"agent_entra_app_id": CLIENT_A}
    )
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    body = response.json()
    assert body["error"] == "invalid_token"
    assert body["request_id"] == response.headers["x-request-id"]
    assert "token" not in response.headers.get("x-request-id", "")


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer " + "a" * 20_000],
    ids=["empty", "bearer-without-token", "empty-bearer", "basic", "other-scheme", "oversized"],
)
async def test_missing_or_malformed_authorization_is_401(lkps: Lkps, authorization: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await lkps.http.post("/api/session/start", json={}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_no_authorization_header_is_401(lkps: Lkps) -> None:
    response = await lkps.http.post("/api/session/start", json={"agent_entra_app_id": CLIENT_A})
    assert response.status_code == 401


async def test_expiry_within_the_leeway_is_accepted(lkps: Lkps) -> None:
    now = int(time.time())
    token = lkps.entra.sign(_claims(lkps.entra, iat=now - 3600, nbf=now - 3600, exp=now - 30))
    response = await lkps.post("/api/session/start", token, {"agent_entra_app_id": CLIENT_A})
    assert response.status_code == 404  # past authentication: the agent is not registered


async def test_unknown_kid_flood_fetches_the_jwks_once(
    lkps: Lkps, other_key: SigningKey, clock: FakeClock
) -> None:
    import asyncio

    before = lkps.entra.jwks_requests
    clock.advance(61)  # past the cooldown of the fetch made at startup
    forged = [
        lkps.entra.sign(_claims(lkps.entra), key=SigningKey(other_key.private_key, f"forged-{i}"))
        for i in range(100)
    ]
    responses = await asyncio.gather(
        *(lkps.post("/api/session/start", token, {}) for token in forged)
    )
    assert {r.status_code for r in responses} == {401}
    assert lkps.entra.jwks_requests - before == 1
    # And inside the cooldown that followed, none at all.
    await lkps.post("/api/session/start", forged[0], {})
    assert lkps.entra.jwks_requests - before == 1


async def test_user_token_on_agent_registration_is_403(lkps: Lkps) -> None:
    response = await lkps.register(token=lkps.user_token())
    assert response.status_code == 403
    assert response.json()["message"] == (
        "Agent registration requires an application (client credentials) token"
    )
