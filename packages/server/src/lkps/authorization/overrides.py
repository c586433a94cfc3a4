"""Operator overrides: an agent's client authorization as an LKPS operator set it.

An override may switch enforcement on or off whatever the agent's registration says,
and may allow client apps on top of the authorization source's list (for a partner app
while the agent owner's Entra change is pending, say). It never removes a client the
source allows: revoking is done where the owner controls it, in Entra.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lkps.clock import Clock
from lkps.errors import BadRequest
from lkps.ids import canonical_uuid
from lkps.store import Database
from lkps.store import overrides as queries
from lkps.store.overrides import StoredOverride

MAX_ADDITIONAL_CLIENTS = 500


@dataclass(frozen=True, slots=True)
class OverrideChange:
    before: StoredOverride | None
    after: StoredOverride | None


def canonical_client_ids(values: Sequence[str]) -> tuple[str, ...]:
    if len(values) > MAX_ADDITIONAL_CLIENTS:
        raise BadRequest(f'"additional_clients" may list at most {MAX_ADDITIONAL_CLIENTS} clients')
    canonical = {canonical_uuid(value) for value in values}
    if None in canonical:
        raise BadRequest('"additional_clients" must be client app ids (UUIDs)')
    return tuple(sorted(value for value in canonical if value is not None))


class AuthorizationOverrides:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def get(self, agent_id: str) -> StoredOverride | None:
        async with self._db.session() as session:
            return await queries.get_override(session, agent_id)

    async def all(self) -> dict[str, StoredOverride]:
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
        after = StoredOverride(
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
