"""A Python client for LKPS, the LiveKit Platform Service.

LKPS turns an Entra ID token into a LiveKit room and a participant token that dispatches
an agent into it. This library makes that one call (and the operators' administration
and audit calls) with typed results and typed errors, blocking or with asyncio:

    from azure.identity import DefaultAzureCredential
    from lkps_client import LkpsClient

    with LkpsClient.for_environment("np", credential=DefaultAzureCredential()) as client:
        session = client.start_session(agent_id, metadata={"language": "en"})
    # join session.room_name at session.livekit_url with session.participant_token

Everything public is importable from `lkps_client`; the `_modules` are private.
"""

from lkps_client._async_client import AsyncLkpsClient
from lkps_client._auth import (
    AccessTokenLike,
    AsyncTokenCredential,
    AsyncTokenProvider,
    TokenCredential,
    TokenProvider,
)
from lkps_client._client import LkpsClient
from lkps_client._environments import ENVIRONMENTS, Environment
from lkps_client._exceptions import (
    AgentNotConnectedError,
    AuthenticationError,
    BadRequestError,
    LkpsError,
    NotAuthorizedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    RegistrationGoneError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    UnexpectedResponseError,
)
from lkps_client._models import (
    AgentInfo,
    AgentRegistration,
    AuditRecord,
    AuthorizationOverride,
    ChainVerification,
    ConnectedWorker,
    Heartbeat,
    Session,
    SessionRecord,
    SessionStep,
)
from lkps_client._version import __version__

__all__ = [
    "ENVIRONMENTS",
    "AccessTokenLike",
    "AgentInfo",
    "AgentNotConnectedError",
    "AgentRegistration",
    "AsyncLkpsClient",
    "AsyncTokenCredential",
    "AsyncTokenProvider",
    "AuditRecord",
    "AuthenticationError",
    "AuthorizationOverride",
    "BadRequestError",
    "ChainVerification",
    "ConnectedWorker",
    "Environment",
    "Heartbeat",
    "LkpsClient",
    "LkpsError",
    "NotAuthorizedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "RegistrationGoneError",
    "ServerError",
    "ServiceUnavailableError",
    "Session",
    "SessionRecord",
    "SessionStep",
    "TokenCredential",
    "TokenProvider",
    "TransportError",
    "UnexpectedResponseError",
    "__version__",
]

# Public classes report the package, not the private module they are defined in, so
# tracebacks and reprs show names users can import.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "lkps_client"
del _name, _obj
