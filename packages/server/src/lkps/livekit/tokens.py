"""Participant and agent tokens.

`livekit-api`'s `VideoGrants` allows publish, subscribe and publish-data by default;
every grant here is spelled out so that what a token allows is read in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from livekit.api import AccessToken, VideoGrants
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration

from lkps.clock import Clock

# How long LiveKit keeps a room after its last participant leaves.
DEPARTURE_TIMEOUT_SECONDS = 30


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
    def __init__(self, api_key: str, api_secret: str, clock: Clock) -> None:
        self._api_key = api_key
        self._api_secret = api_secret
        self._clock = clock

    def participant_token(
        self,
        *,
        identity: str,
        name: str | None,
        room: str,
        room_config: RoomConfiguration,
        ttl: timedelta,
    ) -> IssuedToken:
        grants = VideoGrants(
            room_join=True,
            room=room,
            can_publish=True,
            can_subscribe=True,
            can_publish_data=True,
        )
        token = (
            self._token(ttl)
            .with_identity(identity)
            .with_grants(grants)
            .with_room_config(room_config)
        )
        if name:
            token = token.with_name(name)
        return IssuedToken(token.to_jwt(), self._clock.now() + ttl)

    def agent_token(self, *, agent_name: str, ttl: timedelta) -> IssuedToken:
        """A worker token: registers with LiveKit's `/agent` endpoint and nothing else."""
        grants = VideoGrants(
            agent=True, can_publish=False, can_subscribe=False, can_publish_data=False
        )
        token = self._token(ttl).with_identity(agent_name).with_kind("agent").with_grants(grants)
        return IssuedToken(token.to_jwt(), self._clock.now() + ttl)

    def _token(self, ttl: timedelta) -> AccessToken:
        return AccessToken(self._api_key, self._api_secret).with_ttl(ttl)
