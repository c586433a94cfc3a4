"""Agents' use cases: register (or renew), heartbeat, deregister; and the operators'
view of every agent.

The agent is whoever the token says: its app-only token's client id (`azp`/`appid`)
is the agent id, never anything in a body. `identify` turns a verified caller into an
`AgentIdentity` once, so no use case can be reached with a caller that is not one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from lkps.agents.presence import AgentSummary, ConnectedWorker, effective_enforcement
from lkps.agents.registry import AgentRegistry
from lkps.agents.sweeper import RegistrationsEnded
from lkps.audit import AuditEvent, AuditScope
from lkps.authorization.override import AuthorizationOverride
from lkps.authorization.overrides import AuthorizationOverrides
from lkps.errors import Forbidden
from lkps.gateway.credentials import GatewayCredentials
from lkps.identity import AppRoles, Caller, require_role
from lkps.limits.limiter import Limit, RateLimiter
from lkps.livekit import IssuedToken, TokenMinter

APP_TOKEN_REQUIRED = "Agent registration requires an application (client credentials) token"


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """An app-only caller holding the agent role (when one is set): an agent."""

    agent_id: str


@dataclass(frozen=True, slots=True)
class AgentTerms:
    """What every registration is told, from the deployment's settings."""

    livekit_url: str
    agent_token_ttl: int
    heartbeat_interval: int
    presence_ttl: int
    # "gateway": the worker connects through LKPS's /agent with a gateway credential.
    agent_connection: str = "direct"
    # The gateway's public URL; empty: the one the register request came in on.
    gateway_url: str = ""


@dataclass(frozen=True, slots=True)
class RegistrationRequest:
    registration_id: str | None = None
    enforce_client_authz: bool | None = None
    version: str | None = None
    metadata: dict[str, Any] | None = None
    worker_connected: bool | None = None


@dataclass(frozen=True, slots=True)
class AgentGrant:
    """A registration and the credential its worker connects with: a LiveKit worker
    token (direct), or a gateway credential for LKPS's /agent (gateway)."""

    agent_id: str
    registration_id: str
    token: IssuedToken
    terms: AgentTerms


@dataclass(frozen=True, slots=True)
class AgentOverview:
    """An agent as operators see it: presence, and who decides its enforcement; in
    gateway mode, its connected workers (presence is one of them registered)."""

    summary: AgentSummary
    override: AuthorizationOverride | None
    workers: tuple[ConnectedWorker, ...] = ()
    gateway: bool = False

    @property
    def present(self) -> bool:
        if self.gateway:
            return any(worker.registered for worker in self.workers)
        return self.summary.connected_registrations > 0

    @property
    def enforce_client_authz(self) -> bool:
        forced = self.override.enforce_client_authz if self.override else None
        return effective_enforcement(self.summary.enforce_client_authz, forced)


class AgentService:
    def __init__(
        self,
        registry: AgentRegistry,
        overrides: AuthorizationOverrides,
        minter: TokenMinter,
        limits: RateLimiter,
        *,
        roles: AppRoles,
        terms: AgentTerms,
        gateway_credentials: GatewayCredentials | None = None,
        target_load: float = 0.7,
        registrations_ended: RegistrationsEnded | None = None,
    ) -> None:
        self._registry = registry
        # Gateway mode: a deregistered worker's socket on this replica closes at once.
        self._registrations_ended = registrations_ended
        # LKPS_LIVEKIT_AGENT_TARGET_LOAD: whether a connected worker shows as full.
        self.target_load = target_load
        self._overrides = overrides
        self._minter = minter
        self._limits = limits
        self._roles = roles
        self.terms = terms
        # Set in gateway mode: workers get a credential only the gateway accepts.
        self._gateway_credentials = gateway_credentials

    def identify(self, caller: Caller, audit: AuditScope | None = None) -> AgentIdentity:
        """The agent this caller is, or `Forbidden`; recorded in `audit` either way."""
        if audit is not None:
            audit.set_agent(caller.client_app_id)
        if not caller.app_only:
            raise Forbidden(APP_TOKEN_REQUIRED, reason="delegated (user) token on agent endpoint")
        role = self._roles.agent
        if role and role not in caller.roles:
            raise Forbidden(
                f"Agent registration requires the app role '{role}'",
                reason=f"agent token lacks app role {role}",
            )
        return AgentIdentity(caller.client_app_id)

    async def register(
        self, agent: AgentIdentity, request: RegistrationRequest, audit: AuditScope
    ) -> AgentGrant:
        """Register one worker process of the agent, or renew the live registration it
        names, and issue the LiveKit worker token it connects with.

        The registration and its audit record are committed together or not at all: no
        record, no token, and no presence either, or clients would be dispatched to a
        worker that never received its token (nor a renewal the trail does not show)."""
        await self._limits.check(Limit.REGISTER_PER_AGENT, agent.agent_id)

        async def change(session: AsyncSession) -> AgentGrant:
            registration = await self._registry.register(
                agent.agent_id,
                registration_id=request.registration_id,
                enforce_client_authz=request.enforce_client_authz,
                version=request.version,
                metadata=request.metadata,
                worker_connected=request.worker_connected,
                session=session,
            )
            audit.set_registration(registration.registration_id)
            token = self._credential(agent, registration.registration_id)
            audit.detail(
                enforce_client_authz=registration.enforce_client_authz,
                version=request.version,
                token_expires_at=token.expires_at.isoformat(),
                agent_connection=self.terms.agent_connection,
                worker_connected=request.worker_connected,
            )
            audit.grant(event=AuditEvent.AGENT_RENEW if registration.renewed else None)
            return AgentGrant(agent.agent_id, registration.registration_id, token, self.terms)

        return await audit.commit(change)

    def _credential(self, agent: AgentIdentity, registration_id: str) -> IssuedToken:
        """What the worker connects with: signed here, before the registration is
        committed, so that nothing can fail after it."""
        ttl = timedelta(seconds=self.terms.agent_token_ttl)
        if self._gateway_credentials is not None:
            return self._gateway_credentials.issue(
                agent_id=agent.agent_id, registration_id=registration_id, ttl=ttl
            )
        return self._minter.agent_token(agent_name=agent.agent_id, ttl=ttl)

    async def heartbeat(
        self,
        agent: AgentIdentity,
        registration_id: str | None,
        *,
        worker_connected: bool | None,
    ) -> datetime:
        """Keep the agent present; `NotFound` means the registration is gone."""
        return await self._registry.heartbeat(
            agent.agent_id, registration_id, worker_connected=worker_connected
        )

    async def deregister(
        self, agent: AgentIdentity, registration_id: str | None, audit: AuditScope
    ) -> None:
        """End one registration, or, without an id, all of the agent's registrations;
        committed with its audit record, or not at all."""
        audit.set_registration(registration_id)

        async def change(session: AsyncSession) -> list[str]:
            ended = await self._registry.deregister(
                agent.agent_id, registration_id, session=session
            )
            audit.detail(ended_registrations=ended)
            return ended

        ended = await audit.commit(change)
        if ended and self._registrations_ended is not None:
            self._registrations_ended(ended)

    async def overview(self, caller: Caller) -> list[AgentOverview]:
        """Every agent that ever registered, for holders of the admin or auditor role."""
        require_role(caller, self._roles.admin, self._roles.auditor)
        summaries = await self._registry.summaries()
        overrides: Mapping[str, AuthorizationOverride] = await self._overrides.all()
        gateway = self.terms.agent_connection == "gateway"
        workers: dict[str, list[ConnectedWorker]] = {}
        for worker in await self._registry.workers() if gateway else []:
            workers.setdefault(worker.agent_id, []).append(worker)
        return [
            AgentOverview(
                summary,
                overrides.get(summary.agent_id),
                tuple(workers.get(summary.agent_id.lower(), ())),
                gateway,
            )
            for summary in summaries
        ]
