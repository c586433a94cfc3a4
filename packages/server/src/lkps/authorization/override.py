"""An operator override of one agent's client authorization: the value and its rules.

An override may switch enforcement on or off whatever the agent's registration says,
and may allow client apps on top of the authorization source's list (for a partner app
while the agent owner's Entra change is pending, say). It never removes a client the
source allows: revoking is done where the owner controls it, in Entra.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from lkps.errors import BadRequest
from lkps.ids import canonical_uuid

MAX_ADDITIONAL_CLIENTS = 500


@dataclass(frozen=True, slots=True)
class AuthorizationOverride:
    agent_id: str
    enforce_client_authz: bool | None
    additional_clients: tuple[str, ...]
    updated_at: datetime
    updated_by: str

    def snapshot(self) -> dict[str, object]:
        """As the audit record's `before`/`after` details show it."""
        return {
            "agent_id": self.agent_id,
            "enforce_client_authz": self.enforce_client_authz,
            "additional_clients": list(self.additional_clients),
            "updated_at": self.updated_at.isoformat(),
            "updated_by": self.updated_by,
        }


@dataclass(frozen=True, slots=True)
class OverrideChange:
    before: AuthorizationOverride | None
    after: AuthorizationOverride | None


def canonical_client_ids(values: Sequence[str]) -> tuple[str, ...]:
    if len(values) > MAX_ADDITIONAL_CLIENTS:
        raise BadRequest(f'"additional_clients" may list at most {MAX_ADDITIONAL_CLIENTS} clients')
    canonical = {canonical_uuid(value) for value in values}
    if None in canonical:
        raise BadRequest('"additional_clients" must be client app ids (UUIDs)')
    return tuple(sorted(value for value in canonical if value is not None))
