"""The public surface of lkps_client: what `__all__` promises, and that azure-identity's
credentials fit the Protocols the clients accept (checked by mypy, run here)."""

from __future__ import annotations

import dataclasses

import pytest
from azure.identity import ClientSecretCredential
from azure.identity.aio import ClientSecretCredential as AsyncClientSecretCredential

import lkps_client
from lkps_client import (
    AsyncLkpsClient,
    AsyncTokenCredential,
    LkpsClient,
    LkpsError,
    TokenCredential,
)

pytestmark = pytest.mark.unit

PUBLIC = {
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
}


def test_public_names() -> None:
    assert set(lkps_client.__all__) == PUBLIC
    for name in PUBLIC:
        obj = getattr(lkps_client, name)
        if isinstance(obj, type):
            # Tracebacks and reprs name what users can import, not a private module.
            assert obj.__module__ == "lkps_client", name


def test_every_error_is_an_lkps_error() -> None:
    errors = [obj for obj in vars(lkps_client).values() if isinstance(obj, type)]
    for cls in errors:
        if issubclass(cls, Exception):
            assert issubclass(cls, LkpsError), cls


def test_results_are_frozen() -> None:
    for name in ("Session", "AgentInfo", "ConnectedWorker", "AuditRecord", "AuthorizationOverride"):
        cls = getattr(lkps_client, name)
        assert dataclasses.is_dataclass(cls)
        assert vars(cls)["__dataclass_params__"].frozen, name


def test_agent_registration_fields() -> None:
    # The gateway fields (issue 11) are optional: an LKPS in direct mode leaves them out.
    fields = [field.name for field in dataclasses.fields(lkps_client.AgentRegistration)]
    assert fields == [
        "agent_name",
        "livekit_url",
        "token",
        "expires_at",
        "heartbeat_interval_seconds",
        "presence_ttl_seconds",
        "registration_id",
        "request_id",
        "agent_connection",
        "gateway_url",
    ]


async def test_azure_identity_credentials_fit() -> None:
    # The annotations are the test (mypy); constructing makes no network call.
    tenant, client = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
    sync_credential: TokenCredential = ClientSecretCredential(tenant, client, "secret")
    async_credential = AsyncClientSecretCredential(tenant, client, "secret")
    as_protocol: AsyncTokenCredential = async_credential
    sync_client = LkpsClient("https://lkps.test", credential=sync_credential, scope="api://x")
    async_client = AsyncLkpsClient("https://lkps.test", credential=as_protocol, scope="api://x")
    sync_client.close()
    await async_client.aclose()
    await async_credential.close()
    assert "lkps.test" in repr(sync_client)
