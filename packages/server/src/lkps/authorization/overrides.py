"""Operator overrides as the store keeps them (see `override.py` for what one means)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

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
        session: AsyncSession | None = None,
    ) -> OverrideChange:
        """Set the override, in `session` when given (the caller commits it, with its
        audit record), else in a transaction of its own."""
        after = AuthorizationOverride(
            agent_id=agent_id,
            enforce_client_authz=enforce_client_authz,
            additional_clients=canonical_client_ids(additional_clients),
            updated_at=self._clock.now(),
            updated_by=updated_by,
        )
        async with self._db.session(within=session) as changing:
            # Read before the write, which on SQLite opens the write transaction (the
            # driver begins one at the first write only; see lkps.store.engine).
            before = await queries.get_override(changing, agent_id)
            await queries.put_override(changing, after)
        return OverrideChange(before, after)

    async def clear(self, agent_id: str, session: AsyncSession | None = None) -> OverrideChange:
        """Remove the override; in `session` when given, as `set`."""
        async with self._db.session(within=session) as changing:
            before = await queries.get_override(changing, agent_id)
            await queries.delete_override(changing, agent_id)
        return OverrideChange(before, None)
