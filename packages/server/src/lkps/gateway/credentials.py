"""The gateway credential: what `POST /api/agent/register` hands a worker in gateway mode.

A LiveKit worker token (`video.agent`) lets whoever holds it register with LiveKit under
any agent name, since livekit-server does not check the name against the token (finding
3 of issue 11). The gateway credential instead names one agent and is good at LKPS's
`/agent` gateway only:

- signed (HS256) with a key derived from the LiveKit API secret by HMAC-SHA256 over a
  fixed label, so every replica derives the same key without a new secret to distribute,
  while the key itself is never the LiveKit secret: LiveKit cannot verify it, and its
  `iss` is no LiveKit API key, so LiveKit refuses it twice over;
- `aud` is the gateway, `sub` the agent id, `rid` the registration id, `exp` the agent
  token lifetime (`LKPS_AGENT_TOKEN_TTL`), checked against LKPS's clock.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from pydantic import SecretStr

from lkps.clock import Clock
from lkps.livekit import IssuedToken

# Domain separation: a key derived for this purpose signs nothing else.
KEY_LABEL = b"lkps-agent-gateway/v1"
ISSUER = "lkps"
AUDIENCE = "lkps-agent-gateway"
ALGORITHM = "HS256"


class InvalidGatewayCredential(Exception):
    """The bearer token is not a gateway credential LKPS issued, or no longer one."""


@dataclass(frozen=True, slots=True)
class GatewayClaims:
    """Who a verified credential speaks for."""

    agent_id: str
    registration_id: str
    expires_at: datetime


def derive_key(livekit_api_secret: SecretStr) -> bytes:
    """HMAC-SHA256(secret, label): the same on every replica, useless to LiveKit."""
    return hmac.new(
        livekit_api_secret.get_secret_value().encode(), KEY_LABEL, hashlib.sha256
    ).digest()


class GatewayCredentials:
    """Issues and verifies gateway credentials. Holds the derived key, never the secret."""

    def __init__(self, livekit_api_secret: SecretStr, clock: Clock) -> None:
        self._key = derive_key(livekit_api_secret)
        self._clock = clock

    def issue(self, *, agent_id: str, registration_id: str, ttl: timedelta) -> IssuedToken:
        now = self._clock.now()
        expires_at = now + ttl
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": agent_id.lower(),
            "rid": registration_id,
            "exp": calendar.timegm(expires_at.utctimetuple()),
        }
        return IssuedToken(jwt.encode(claims, self._key, algorithm=ALGORITHM), expires_at)

    def verify(self, token: str) -> GatewayClaims:
        """The claims of a valid, unexpired credential, or `InvalidGatewayCredential`
        whose message names the first problem (never the token)."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                # Expiry against LKPS's clock (below), so tests need not sleep.
                options={"require": ["exp", "sub", "aud", "iss"], "verify_exp": False},
            )
        except jwt.InvalidAudienceError as exc:
            raise InvalidGatewayCredential("not a credential for the agent gateway") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidGatewayCredential("not a gateway credential LKPS issued") from exc
        subject, registration_id, expiry = claims["sub"], claims.get("rid"), claims["exp"]
        if not isinstance(subject, str) or not isinstance(registration_id, str):
            raise InvalidGatewayCredential("the credential names no agent registration")
        if not isinstance(expiry, int):
            raise InvalidGatewayCredential("the credential's expiry is malformed")
        expires_at = datetime.fromtimestamp(expiry, UTC)
        if self._clock.now() >= expires_at:
            raise InvalidGatewayCredential("the gateway credential has expired")
        return GatewayClaims(subject, registration_id, expires_at)
