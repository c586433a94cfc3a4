"""Starting a session: presence, then authorization, then the token."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from lkps.agents import AgentRegistry, agent_not_connected
from lkps.authorization import ClientAuthorizer
from lkps.clock import Clock
from lkps.identity import Caller
from lkps.livekit import IssuedToken, TokenMinter, dispatch_room_config
from lkps.sessions.metadata import ClientMetadata, dispatch_metadata
from lkps.sessions.room_names import new_room_name


@dataclass(frozen=True, slots=True)
class StartedSession:
    session_id: str
    agent_id: str
    room_name: str
    livekit_url: str
    participant_token: IssuedToken
    authorization_reason: str


class SessionService:
    def __init__(
        self,
        registry: AgentRegistry,
        authorizer: ClientAuthorizer,
        minter: TokenMinter,
        clock: Clock,
        *,
        livekit_url: str,
        max_participants: int,
        participant_token_ttl: int,
    ) -> None:
        self._registry = registry
        self._authorizer = authorizer
        self._minter = minter
        self._clock = clock
        self._livekit_url = livekit_url
        self._max_participants = max_participants
        self._ttl = timedelta(seconds=participant_token_ttl)

    async def start(
        self, caller: Caller, agent_id: uuid.UUID, metadata: ClientMetadata | None
    ) -> StartedSession:
        """Raises `NotFound` (agent absent), `Forbidden` (client not allowed) or
        `ServiceUnavailable` (store or authorization source down)."""
        agent = str(agent_id)
        # Presence first: whether the agent enforces client authorization is part of
        # what its registration says.
        presence = await self._registry.presence(agent)
        if presence is None:
            raise agent_not_connected(agent)
        decision = await self._authorizer.check(
            agent_id=agent,
            client_app_id=caller.client_app_id,
            enforce=presence.enforce_client_authz,
            additional_clients=presence.additional_clients,
        )
        room = new_room_name(caller.cwid, agent, self._clock.now())
        token = self._minter.participant_token(
            identity=caller.cwid,
            name=caller.name,
            room=room,
            room_config=dispatch_room_config(
                agent, dispatch_metadata(metadata), max_participants=self._max_participants
            ),
            ttl=self._ttl,
        )
        return StartedSession(
            session_id=str(uuid.uuid4()),
            agent_id=agent,
            room_name=room,
            livekit_url=self._livekit_url,
            participant_token=token,
            authorization_reason=decision.reason,
        )
