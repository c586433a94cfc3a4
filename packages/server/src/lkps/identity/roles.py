"""App roles: what an Entra app registration's `roles` claim lets a caller do in LKPS."""

from __future__ import annotations

from dataclasses import dataclass

from lkps.errors import Forbidden
from lkps.identity.caller import Caller


@dataclass(frozen=True, slots=True)
class AppRoles:
    """The role names this deployment uses (LKPS_ADMIN_ROLE, LKPS_AUDITOR_ROLE,
    LKPS_AGENT_ROLE; the agent role may be empty: any app-only caller)."""

    admin: str
    auditor: str
    agent: str = ""


def require_role(caller: Caller, *roles: str) -> None:
    """Refuse a caller holding none of `roles` (app roles, in the token's `roles`)."""
    if not caller.roles.intersection(roles):
        wanted = " or ".join(f"'{role}'" for role in roles)
        raise Forbidden(
            f"This requires the app role {wanted}",
            reason=f"caller lacks app role {wanted}",
        )
