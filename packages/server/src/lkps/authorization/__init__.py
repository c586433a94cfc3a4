"""May this client application start sessions with that agent?

The agent owner pre-authorizes client apps in the agent's Entra app registration
(`api.preAuthorizedApplications`); a source reads that list, `ClientAuthorizer` applies
it. Sources fail closed: when they cannot answer, the caller gets 503, never an allow.
"""

from lkps.authorization.authorizer import AuthorizationDecision, ClientAuthorizer
from lkps.authorization.file import FileAuthorizationSource
from lkps.authorization.graph import GraphAuthorizationSource
from lkps.authorization.source import AuthorizationSource, AuthorizationUnavailable

__all__ = [
    "AuthorizationDecision",
    "AuthorizationSource",
    "AuthorizationUnavailable",
    "ClientAuthorizer",
    "FileAuthorizationSource",
    "GraphAuthorizationSource",
]
