"""The gateway credential: LKPS verifies what it issued and nothing else; LiveKit's own
check (its API key as issuer, its secret as key) refuses it."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from pydantic import SecretStr

from lkps.clock import SystemClock
from lkps.gateway import GatewayCredentials, InvalidGatewayCredential
from lkps.gateway.credentials import AUDIENCE, ISSUER, derive_key
from lkps.livekit import TokenMinter
from tests.conftest import AGENT, LIVEKIT_KEY, LIVEKIT_SECRET, FakeClock

pytestmark = pytest.mark.unit

REGISTRATION = "0f0f0f0f-0000-4000-8000-000000000001"
TTL = timedelta(hours=1)


def _credentials(clock: FakeClock, secret: str = LIVEKIT_SECRET) -> GatewayCredentials:
    return GatewayCredentials(SecretStr(secret), clock)


def test_round_trip_names_agent_and_registration() -> None:
    clock = FakeClock()
    credentials = _credentials(clock)
    issued = credentials.issue(agent_id=AGENT.upper(), registration_id=REGISTRATION, ttl=TTL)
    claims = credentials.verify(issued.jwt)
    assert claims.agent_id == AGENT  # canonical lower case
    assert claims.registration_id == REGISTRATION
    assert claims.expires_at == issued.expires_at.replace(microsecond=0)


def test_every_replica_derives_the_same_key() -> None:
    clock = FakeClock()
    issued = _credentials(clock).issue(agent_id=AGENT, registration_id=REGISTRATION, ttl=TTL)
    assert _credentials(clock).verify(issued.jwt).agent_id == AGENT


def test_the_key_is_not_the_livekit_secret() -> None:
    assert derive_key(SecretStr(LIVEKIT_SECRET)) != LIVEKIT_SECRET.encode()
    issued = _credentials(FakeClock()).issue(agent_id=AGENT, registration_id=REGISTRATION, ttl=TTL)
    # What LiveKit does with a worker token: verify with the secret of the key in `iss`.
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(issued.jwt, LIVEKIT_SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert jwt.decode(issued.jwt, options={"verify_signature": False})["iss"] != LIVEKIT_KEY


def test_expired_is_refused_by_lkps_clock() -> None:
    clock = FakeClock()
    credentials = _credentials(clock)
    issued = credentials.issue(agent_id=AGENT, registration_id=REGISTRATION, ttl=TTL)
    clock.advance(TTL.total_seconds() + 1)
    with pytest.raises(InvalidGatewayCredential, match="expired"):
        credentials.verify(issued.jwt)


def _signed(claims: dict[str, object], key: bytes | str) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("livekit-worker-token", "not a gateway credential"),
        ("other-secret", "not a gateway credential"),
        ("wrong-audience", "not a credential for the agent gateway"),
        ("wrong-issuer", "not a gateway credential"),
        ("no-registration", "names no agent registration"),
        ("alg-none", "not a gateway credential"),
        ("garbage", "not a gateway credential"),
    ],
)
def test_hostile_tokens_are_refused(case: str, match: str) -> None:
    clock = FakeClock()
    key = derive_key(SecretStr(LIVEKIT_SECRET))
    exp = int(clock.now().timestamp()) + 600
    good = {"iss": ISSUER, "aud": AUDIENCE, "sub": AGENT, "rid": REGISTRATION, "exp": exp}
    token = {
        "livekit-worker-token": TokenMinter(LIVEKIT_KEY, SecretStr(LIVEKIT_SECRET), SystemClock())
        .agent_token(agent_name=AGENT, ttl=TTL)
        .jwt,
        "other-secret": _signed(good, derive_key(SecretStr("another-secret-" * 3))),
        "wrong-audience": _signed(good | {"aud": "livekit"}, key),
        "wrong-issuer": _signed(good | {"iss": LIVEKIT_KEY}, key),
        "no-registration": _signed({k: v for k, v in good.items() if k != "rid"}, key),
        "alg-none": jwt.encode(good, "", algorithm="none"),
        "garbage": "not.a.jwt",
    }[case]
    with pytest.raises(InvalidGatewayCredential, match=match):
        _credentials(clock).verify(token)
