"""Operators' use cases on client authorization: read, set and clear an agent's override.

Reading takes `LKPS.Admin` or `LKPS.Auditor`; changing takes `LKPS.Admin`, and every
change is audited with who made it and what it replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from lkps.audit import AuditScope
from lkps.authorization.override import AuthorizationOverride
from lkps.authorization.overrides import AuthorizationOverrides
from lkps.errors import NotFound
from lkps.identity import AppRoles, Caller, require_role


@dataclass(frozen=True, slots=True)
class OverrideChangeRight:
    """An admin's right to change one agent's override: checked before the request's
    body is read, so a caller without it learns nothing about what it sent."""

    caller: Caller
    agent_id: str


class AuthorizationService:
    def __init__(self, overrides: AuthorizationOverrides, roles: AppRoles) -> None:
        self.overrides = overrides
        self._roles = roles

    async def read_override(self, caller: Caller, agent_id: str) -> AuthorizationOverride:
        require_role(caller, self._roles.admin, self._roles.auditor)
        override = await self.overrides.get(agent_id)
        if override is None:
            raise NotFound(f"Agent '{agent_id}' has no authorization override")
        return override

    def may_change(self, caller: Caller, agent_id: str, audit: AuditScope) -> OverrideChangeRight:
        """The right to change `agent_id`'s override, or `Forbidden`; audited either way."""
        audit.set_agent(agent_id)
        require_role(caller, self._roles.admin)
        return OverrideChangeRight(caller, agent_id)

    async def set_override(
        self,
        right: OverrideChangeRight,
        audit: AuditScope,
        *,
        enforce_client_authz: bool | None,
        additional_clients: Sequence[str],
    ) -> AuthorizationOverride:
        """Force enforcement on or off, and/or allow further client apps; committed
        with its audit record, or not at all."""
        caller = right.caller

        async def change(session: AsyncSession) -> AuthorizationOverride:
            change = await self.overrides.set(
                right.agent_id,
                enforce_client_authz=enforce_client_authz,
                additional_clients=additional_clients,
                updated_by=f"{caller.cwid} ({caller.subject_key})",
                session=session,
            )
            assert change.after is not None
            audit.detail(
                before=change.before.snapshot() if change.before else None,
                after=change.after.snapshot(),
            )
            return change.after

        return await audit.commit(change)

    async def clear_override(self, right: OverrideChangeRight, audit: AuditScope) -> None:
        """The agent's registration and the source decide again; committed with its
        audit record, or not at all."""

        async def change(session: AsyncSession) -> None:
            change = await self.overrides.clear(right.agent_id, session=session)
            audit.detail(before=change.before.snapshot() if change.before else None)

        await audit.commit(change)
