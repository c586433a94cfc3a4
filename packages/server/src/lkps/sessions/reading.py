"""Who may read a session: the user who started it (same `tid`+`oid`), the client app
that started it app-only, or an auditor; for anyone else it does not exist (404, so
that a session id tells nothing to those who may not read it)."""

from __future__ import annotations

from datetime import datetime

from lkps.errors import BadRequest, NotFound
from lkps.identity import Caller
from lkps.identity.roles import AppRoles, require_role
from lkps.sessions.lifecycle import SessionLifecycle
from lkps.sessions.records import SessionFacts

SESSION_NOT_FOUND = "Session '{}' was not found"


class SessionRecords:
    def __init__(self, lifecycle: SessionLifecycle, roles: AppRoles) -> None:
        self._lifecycle = lifecycle
        self._roles = roles

    async def one(self, caller: Caller, session_id: str) -> SessionFacts:
        facts = await self._lifecycle.find(session_id)
        if facts is None or not self._may_read(caller, facts):
            raise NotFound(SESSION_NOT_FOUND.format(session_id), reason="session not visible")
        return facts

    async def search(
        self,
        caller: Caller,
        *,
        agent_id: str | None,
        since: datetime | None,
        state: str | None,
        limit: int,
    ) -> list[SessionFacts]:
        require_role(caller, self._roles.auditor)
        if since is not None and since.tzinfo is None:
            raise BadRequest('"since" needs a time zone (e.g. 2026-11-23T12:00:00Z)')
        return await self._lifecycle.search(
            agent_id=agent_id, since=since, state=state, limit=limit
        )

    def _may_read(self, caller: Caller, facts: SessionFacts) -> bool:
        if self._roles.auditor in caller.roles:
            return True
        if caller.app_only:
            return facts.app_only and caller.client_app_id == facts.client_app_id
        return (
            not facts.app_only
            and caller.tenant_id == facts.actor_tenant_id
            and caller.object_id == facts.actor_object_id
        )
