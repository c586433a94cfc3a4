"""Both clients against the real LKPS: the blocking one over a socket, the async one
through httpx's ASGI transport. Status codes and messages are LKPS's own."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from lkps_client import (
    AgentNotConnectedError,
    AsyncLkpsClient,
    AuthenticationError,
    BadRequestError,
    LkpsClient,
    NotAuthorizedError,
    NotFoundError,
    Session,
)
from lkps_testkit import EntraDouble, ServerThread, TlsFiles
from tests.client.conftest import FakeAsyncCredential, FakeCredential
from tests.conftest import (
    AGENT,
    AGENT_2,
    API_AUDIENCE,
    CLIENT_A,
    CLIENT_B,
    LIVEKIT_URL,
    Lkps,
    Served,
)

pytestmark = pytest.mark.api

SCOPE = "api://lkps.test/.default"


def assert_session(session: Session) -> None:
    assert session.livekit_url == LIVEKIT_URL
    assert re.fullmatch(rf"alice-{AGENT}-\d+-[0-9a-f]+", session.room_name)
    assert session.participant_token.count(".") == 2
    assert session.session_id is not None
    uuid.UUID(session.session_id)
    assert session.expires_at is not None
    assert session.expires_at > datetime.now(UTC)
    assert session.request_id


# The blocking client, over a socket.


def test_granted_session(served: Served) -> None:
    with LkpsClient(served.url, token=served.user_token()) as client:
        session = client.start_session(AGENT, metadata={"language": "en"})
    assert_session(session)
    # A session that ends up in a log must not hand the room to whoever reads it.
    assert session.participant_token not in repr(session)
    assert session.participant_token not in str(session)
    assert session.room_name in repr(session)


def test_agent_id_may_be_a_uuid(served: Served) -> None:
    with LkpsClient(served.url, token=served.user_token()) as client:
        assert_session(client.start_session(uuid.UUID(AGENT)))


def test_unregistered_agent_is_not_connected(served: Served) -> None:
    with (
        LkpsClient(served.url, token=served.user_token()) as client,
        pytest.raises(AgentNotConnectedError) as caught,
    ):
        client.start_session(AGENT_2)
    error = caught.value
    assert isinstance(error, NotFoundError)
    assert (error.status_code, error.code) == (404, "not_found")
    assert error.message == f"Agent with app ID '{AGENT_2}' is not connected"
    assert error.request_id
    assert str(error) == f"{error.message} (HTTP 404, request id {error.request_id})"


def test_client_app_not_pre_authorized(served: Served) -> None:
    with (
        LkpsClient(served.url, token=served.user_token(client=CLIENT_B)) as client,
        pytest.raises(NotAuthorizedError) as caught,
    ):
        client.start_session(AGENT)
    assert caught.value.status_code == 403
    assert caught.value.message == "You are not authorized to access this agent"


def test_invalid_token(served: Served) -> None:
    with (
        LkpsClient(served.url, token="not-a-token") as client,
        pytest.raises(AuthenticationError) as caught,
    ):
        client.start_session(AGENT)
    assert caught.value.status_code == 401
    assert caught.value.message == "The access token is missing or invalid"


def test_too_many_metadata_keys(served: Served) -> None:
    metadata = {f"k{i}": i for i in range(51)}
    with (
        LkpsClient(served.url, token=served.user_token()) as client,
        pytest.raises(BadRequestError) as caught,
    ):
        client.start_session(AGENT, metadata=metadata)
    assert caught.value.message == '"metadata" has 51 keys; at most 50 are allowed'


def test_token_provider_is_asked_before_every_request(served: Served) -> None:
    calls = 0

    def provider() -> str:
        nonlocal calls
        calls += 1
        return served.user_token()

    with LkpsClient(served.url, token_provider=provider) as client:
        for _ in range(3):
            client.start_session(AGENT)
    assert calls == 3


def test_credential_token_is_reused_until_near_expiry(served: Served) -> None:
    fresh = FakeCredential([served.user_token()], lifetime=3600)
    with LkpsClient(served.url, credential=fresh, scope=SCOPE) as client:
        client.start_session(AGENT)
        client.start_session(AGENT)
    assert fresh.scopes == [(SCOPE,)]

    # Expiring in 4 minutes: inside the 5-minute margin, so fetched again for each call.
    expiring = FakeCredential([served.user_token(), served.user_token()], lifetime=240)
    with LkpsClient(served.url, credential=expiring, scope=SCOPE) as client:
        client.start_session(AGENT)
        client.start_session(AGENT)
    assert expiring.scopes == [(SCOPE,), (SCOPE,)]


def test_rejected_credential_token_is_not_reused(served: Served) -> None:
    credential = FakeCredential(["revoked", served.user_token()], lifetime=3600)
    with LkpsClient(served.url, credential=credential, scope=SCOPE) as client:
        with pytest.raises(AuthenticationError):
            client.start_session(AGENT)
        assert_session(client.start_session(AGENT))
    assert len(credential.scopes) == 2


# The async client, through the ASGI transport.


def asgi_http(lkps: Lkps) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=lkps.app))


@pytest.fixture
async def present(lkps: Lkps) -> Lkps:
    assert (await lkps.register(AGENT, enforce_client_authz=True)).status_code == 200
    return lkps


async def test_async_granted_session(present: Lkps) -> None:
    async with (
        asgi_http(present) as http,
        AsyncLkpsClient("http://lkps.test", token=present.user_token(), http_client=http) as client,
    ):
        session = await client.start_session(AGENT, metadata={"language": "en"})
    assert_session(session)
    assert session.participant_token not in repr(session)
    # Our request id is the one LKPS audited the session under.
    records = await present.audit_records()
    assert records[-1].request_id == session.request_id


async def test_async_errors(present: Lkps) -> None:
    async with asgi_http(present) as http:
        client = AsyncLkpsClient("http://lkps.test", token=present.user_token(), http_client=http)
        with pytest.raises(AgentNotConnectedError) as not_connected:
            await client.start_session(AGENT_2)
        assert not_connected.value.message == f"Agent with app ID '{AGENT_2}' is not connected"

        other = AsyncLkpsClient(
            "http://lkps.test", token=present.user_token(client=CLIENT_B), http_client=http
        )
        with pytest.raises(NotAuthorizedError):
            await other.start_session(AGENT)

        with pytest.raises(BadRequestError, match="must be a UUID"):
            await client.start_session("not-a-uuid")
        # The http client was passed in, so closing ours leaves it open.
        await client.aclose()
        assert not http.is_closed


async def test_async_token_provider_may_be_sync_or_async(present: Lkps) -> None:
    calls: list[str] = []

    async def async_provider() -> str:
        calls.append("async")
        return present.user_token()

    def sync_provider() -> str:
        calls.append("sync")
        return present.user_token()

    async with asgi_http(present) as http:
        for provider in (async_provider, sync_provider):
            client = AsyncLkpsClient("http://lkps.test", token_provider=provider, http_client=http)
            await client.start_session(AGENT)
            await client.start_session(AGENT)
    assert calls == ["async", "async", "sync", "sync"]


async def test_async_credential_token_is_cached(present: Lkps) -> None:
    credential = FakeAsyncCredential([present.user_token()])
    async with asgi_http(present) as http:
        client = AsyncLkpsClient(
            "http://lkps.test", credential=credential, scope=SCOPE, http_client=http
        )
        for _ in range(3):
            assert_session(await client.start_session(AGENT))
    assert credential.scopes == [(SCOPE,)]


async def test_async_client_refuses_a_sync_credential(present: Lkps) -> None:
    async with asgi_http(present) as http:
        client = AsyncLkpsClient(
            "http://lkps.test",
            credential=FakeCredential([present.user_token()]),  # type: ignore[arg-type]
            scope=SCOPE,
            http_client=http,
        )
        with pytest.raises(TypeError, match=r"azure\.identity\.aio"):
            await client.start_session(AGENT)


def test_real_azure_identity_credential(
    served: Served, entra: EntraDouble, entra_tls_server: ServerThread, tls: TlsFiles
) -> None:
    """A backend's client-credentials login with azure-identity itself, against the Entra
    double over TLS, then a session with the token it obtained."""
    from azure.identity import ClientSecretCredential

    entra.client_secrets[CLIENT_A] = "backend-secret"
    try:
        credential = ClientSecretCredential(
            entra.tenant_id,
            CLIENT_A,
            "backend-secret",
            authority=entra_tls_server.url,
            connection_verify=tls.ca_cert,
            # MSAL would otherwise ask login.microsoftonline.com about this authority.
            disable_instance_discovery=True,
        )
        with LkpsClient(
            served.url, credential=credential, scope=f"{API_AUDIENCE}/.default"
        ) as client:
            session = client.start_session(AGENT)
        assert session.room_name.startswith(f"{CLIENT_A}-{AGENT}-")  # app-only: cwid = client id
        assert entra.token_requests >= 1
    finally:
        entra.client_secrets.pop(CLIENT_A, None)
