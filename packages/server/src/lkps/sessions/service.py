"""Starting a session: rate limits, presence, authorization, then the token."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from lkps.agents import AgentRegistry, agent_at_capacity, agent_not_connected
from lkps.audit import AuditScope
from lkps.authorization import ClientAuthorizer
from lkps.clock import Clock
from lkps.identity import Caller
from lkps.limits.limiter import Limit, RateLimiter
from lkps.livekit import IssuedToken, TokenMinter, dispatch_room_config
from lkps.sessions.metadata import ClientMetadata, dispatch_metadata
from lkps.sessions.records import SessionGrant
from lkps.sessions.room_names import new_room_name

# The contract's message for a session start that failed inside LKPS (500).
SESSION_FAILED = "Session creation failed"


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """What a client asks for, whichever endpoint it asked through (`via`)."""

    agent_id: uuid.UUID
    metadata: ClientMetadata | None
    via: str


@dataclass(frozen=True, slots=True)
class StartedSession:
    session_id: str
    agent_id: str
    room_name: str
    livekit_url: str
    participant_token: IssuedToken


class SessionService:
    def __init__(
        self,
        registry: AgentRegistry,
        authorizer: ClientAuthorizer,
        minter: TokenMinter,
        limits: RateLimiter,
        clock: Clock,
        *,
        livekit_url: str,
        max_participants: int,
        participant_token_ttl: int,
    ) -> None:
        self._registry = registry
        self._authorizer = authorizer
        self._minter = minter
        self._limits = limits
        self._clock = clock
        self._livekit_url = livekit_url
        self._max_participants = max_participants
        self._ttl = timedelta(seconds=participant_token_ttl)

    async def start(
        self, caller: Caller, request: SessionRequest, audit: AuditScope
    ) -> StartedSession:
        """Raises `TooManyRequests`, `NotFound` (agent absent), `Forbidden` (client not
        allowed) or `ServiceUnavailable` (store or authorization source down, or every
        worker of the agent at capacity)."""
        agent = str(request.agent_id)
        audit.set_agent(agent)
        await self._limits.check(Limit.SESSION_PER_CLIENT, caller.client_app_id)
        if not caller.app_only:
            await self._limits.check(Limit.SESSION_PER_USER, caller.subject_key)
        # Presence first: whether the agent enforces client authorization is part of
        # what its registration says.
        presence = await self._registry.presence(agent)
        if presence is None:
            raise agent_not_connected(agent)
        if not presence.has_capacity:
            raise agent_at_capacity(agent)
        decision = await self._authorizer.check(
            agent_id=agent,
            client_app_id=caller.client_app_id,
            enforce=presence.enforce_client_authz,
            additional_clients=presence.additional_clients,
        )
        room = new_room_name(caller.cwid, agent, self._clock.now())
        audit.set_room(room)
        metadata = dispatch_metadata(request.metadata)
        token = self._minter.participant_token(
            identity=caller.cwid,
            name=caller.name,
            room=room,
            room_config=dispatch_room_config(
                agent, metadata, max_participants=self._max_participants
            ),
            ttl=self._ttl,
        )
        session = StartedSession(
            session_id=str(uuid.uuid4()),
            agent_id=agent,
            room_name=room,
            livekit_url=self._livekit_url,
            participant_token=token,
        )
        # The session's row, for its lifecycle (webhooks, no-show retry, GET
        # /api/sessions): committed with the grant's record, or not at all.
        audit.open_session(
            SessionGrant(
                session_id=session.session_id,
                room_name=room,
                agent_id=agent,
                via=request.via,
                actor_tenant_id=caller.tenant_id,
                actor_object_id=caller.object_id,
                actor_cwid=caller.cwid,
                client_app_id=caller.client_app_id,
                app_only=caller.app_only,
                dispatch_metadata=metadata,
                granted_at=self._clock.now(),
            ).row()
        )
        audit.detail(
            via=request.via,
            session_id=session.session_id,
            token_expires_at=token.expires_at.isoformat(),
            metadata_bytes=len(metadata.encode()),
        )
        audit.grant(reason=decision.reason)
        return session
