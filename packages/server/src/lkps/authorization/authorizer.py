"""Applies an authorization source to one session start."""

from __future__ import annotations

from dataclasses import dataclass

from lkps.authorization.source import AuthorizationSource
from lkps.errors import Forbidden

NOT_AUTHORIZED_MESSAGE = "You are not authorized to access this agent"


@dataclass(frozen=True, slots=True)
class AuthorizationDecision:
    reason: str


class ClientAuthorizer:
    def __init__(self, source: AuthorizationSource) -> None:
        self.source = source

    async def check(
        self,
        *,
        agent_id: str,
        client_app_id: str,
        enforce: bool,
        additional_clients: frozenset[str] = frozenset(),
    ) -> AuthorizationDecision:
        """Allow, or raise `Forbidden` with the seed's message and the real reason.

        `additional_clients` (an operator override) are allowed without asking the
        source, which spares a Graph round trip for them.
        """
        if not enforce:
            return AuthorizationDecision("agent does not enforce client authorization")
        if client_app_id.lower() in additional_clients:
            return AuthorizationDecision("client allowed by operator override")
        clients = await self.source.pre_authorized_clients(agent_id)
        if clients is None:
            raise Forbidden(
                NOT_AUTHORIZED_MESSAGE,
                reason=(
                    f"agent app registration {agent_id} is unknown to the {self.source.name} "
                    "authorization source; its owner must expose an API and pre-authorize clients"
                ),
            )
        if client_app_id.lower() not in clients:
            raise Forbidden(
                NOT_AUTHORIZED_MESSAGE,
                reason=f"client {client_app_id} is not pre-authorized for agent {agent_id}",
            )
        return AuthorizationDecision(f"client pre-authorized ({self.source.name})")
