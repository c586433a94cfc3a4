"""Who is calling: Entra ID access tokens verified against the tenant's signing keys."""

from lkps.identity.caller import Caller
from lkps.identity.jwks import JwksCache
from lkps.identity.roles import AppRoles, require_role
from lkps.identity.validator import TokenValidator

__all__ = ["AppRoles", "Caller", "JwksCache", "TokenValidator", "require_role"]
