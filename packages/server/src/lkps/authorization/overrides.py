"""Operator overrides as the store keeps them (see `override.py` for what one means)."""

from __future__ import annotations

from collections.abc import Sequence

from lkps.authorization.override import (
    AuthorizationOverride,
    OverrideChange,
    canonical_client_ids,
)
from lkps.clock import Clock
from lkps.store import Database
from lkps.store import overrides as queries


class AuthorizationOverrides:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def get(self, agent_id: str) -> AuthorizationOverride | None:
        async with self._db.session() as session:
            return await queries.get_override(session, agent_id)

    async def all(self) -> dict[str, AuthorizationOverride]:
        async with self._db.session() as session:
            return await queries.all_overrides(session)

    async def set(
        self,
        agent_id: str,
        *,
        enforce_client_authz: bool | None,
        additional_clients: Sequence[str],
        updated_by: str,
    ) -> OverrideChange:
        after = AuthorizationOverride(
            agent_id=agent_id,
            enforce_client_authz=enforce_client_authz,
            additional_clients=canonical_client_ids(additional_clients),
            updated_at=self._clock.now(),
            updated_by=updated_by,
        )
        # `before` is read on its own: a write transaction here always starts with its
        # write (see lkps.store.engine), and `before` only informs the audit record.
        before = await self.get(agent_id)
        async with self._db.session() as session:
            await queries.put_override(session, after)
        return OverrideChange(before, after)

    async def clear(self, agent_id: str) -> OverrideChange:
        before = await self.get(agent_id)
        async with self._db.session() as session:
            await queries.delete_override(session, agent_id)
        return OverrideChange(before, None)
