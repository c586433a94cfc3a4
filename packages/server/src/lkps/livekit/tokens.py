"""Participant and agent tokens.

`livekit-api`'s `VideoGrants` allows publish, subscribe and publish-data by default;
every grant here is spelled out so that what a token allows is read in one place.

The claims are those `livekit-api`'s `AccessToken.to_jwt` writes, key for key and in
its order, but built from templates made once by `livekit-api` itself: its generic
`dataclasses.asdict` walk of every grant field (and a deep copy of the room
configuration) cost most of a session start's token. They are signed with PyJWT's
`jwt.encode(claims, secret, algorithm="HS256")`, as livekit-api signs them.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jwt
from google.protobuf.json_format import MessageToDict
from livekit.api import AccessToken, VideoGrants
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration
from pydantic import SecretStr

from lkps.clock import Clock

# How long LiveKit keeps a room after its last participant leaves.
DEPARTURE_TIMEOUT_SECONDS = 30

_PARTICIPANT_GRANTS = VideoGrants(
    room_join=True,
    room="\0",  # a placeholder, so the template holds the key in its place
    can_publish=True,
    can_subscribe=True,
    can_publish_data=True,
)
_AGENT_GRANTS = VideoGrants(
    agent=True, can_publish=False, can_subscribe=False, can_publish_data=False
)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    jwt: str
    expires_at: datetime


def dispatch_room_config(
    agent_name: str, dispatch_metadata: str, *, max_participants: int
) -> RoomConfiguration:
    """The room LiveKit creates on first join, dispatching `agent_name` into it."""
    return RoomConfiguration(
        max_participants=max_participants,
        sync_streams=True,
        departure_timeout=DEPARTURE_TIMEOUT_SECONDS,
        agents=[RoomAgentDispatch(agent_name=agent_name, metadata=dispatch_metadata)],
    )


class TokenMinter:
    """Signs LKPS's LiveKit tokens with the configured key and secret.

    The secret stays a `SecretStr` until the moment it signs (`_Signer.sign`), so that no
    repr, log line or traceback of the minter or its signer can show it."""

    def __init__(self, api_key: str, api_secret: SecretStr, clock: Clock) -> None:
        self._api_key = api_key
        self._api_secret = api_secret
        self._clock = clock
        self._signer: _Signer | None = None
        # The claims livekit-api writes for these grants, less the per-token values
        # (they do not depend on the key). The placeholder key and secret are never
        # signed with; they keep `AccessToken` from reading the environment for its own.
        template = AccessToken("template", "template")
        self._participant_video: dict[str, Any] = template.with_grants(
            _PARTICIPANT_GRANTS
        ).claims.asdict()["video"]
        template = AccessToken("template", "template")
        self._agent_claims: dict[str, Any] = (
            template.with_kind("agent").with_grants(_AGENT_GRANTS).claims.asdict()
        )

    def participant_token(
        self,
        *,
        identity: str,
        name: str | None,
        room: str,
        room_config: RoomConfiguration,
        ttl: timedelta,
    ) -> IssuedToken:
        if not identity or not room:
            raise ValueError("identity and room must be set when joining a room")
        claims: dict[str, Any] = {"name": name} if name else {}
        video = self._participant_video.copy()
        video["room"] = room
        claims["video"] = video
        claims["roomConfig"] = MessageToDict(room_config)
        return self._issue(claims, identity, ttl)

    def agent_token(self, *, agent_name: str, ttl: timedelta) -> IssuedToken:
        """A worker token: registers with LiveKit's `/agent` endpoint and nothing else."""
        return self._issue(self._agent_claims.copy(), agent_name, ttl)

    def _issue(self, claims: dict[str, Any], identity: str, ttl: timedelta) -> IssuedToken:
        """Sign as `AccessToken.to_jwt` does: `sub`, `iss`, `nbf`, `exp` after the grants."""
        signer = self._signer or self._new_signer()
        # One reading of the injected clock for the token and what is reported of it.
        now = self._clock.now()
        expires_at = now + ttl
        claims["sub"] = identity
        claims["iss"] = signer.issuer
        claims["nbf"] = calendar.timegm(now.utctimetuple())
        claims["exp"] = calendar.timegm(expires_at.utctimetuple())
        return IssuedToken(signer.sign(claims), expires_at)

    def _new_signer(self) -> _Signer:
        """The configured key and secret, once; refused when either is empty.

        Not through `AccessToken(key, secret)`: that fills an empty key or secret from
        `LIVEKIT_API_KEY` / `LIVEKIT_API_SECRET`, and LKPS signs only with what its
        `LKPS_*` settings say (contract §4)."""
        if not self._api_key or not self._api_secret.get_secret_value():
            raise ValueError(
                "api_key and api_secret must be set "
                "(LKPS_LIVEKIT_API_KEY, LKPS_LIVEKIT_API_SECRET; LIVEKIT_* are not read)"
            )
        self._signer = _Signer(self._api_key, self._api_secret)
        return self._signer


@dataclass(frozen=True, slots=True)
class _Signer:
    issuer: str
    # Out of the repr as well as masked by SecretStr: neither alone is relied on.
    secret: SecretStr = field(repr=False)

    def sign(self, claims: dict[str, Any]) -> str:
        """The one place the secret is unwrapped."""
        return jwt.encode(claims, self.secret.get_secret_value(), algorithm="HS256")
