"""The agent calls of both clients (register, heartbeat, deregister) against the real
LKPS, and the 429 mapping through a mock transport."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest

from lkps.app import create_app
from lkps.config import Settings
from lkps_client import (
    AgentNotConnectedError,
    AsyncLkpsClient,
    LkpsClient,
    LkpsError,
    NotAuthorizedError,
    RateLimitedError,
    RegistrationGoneError,
)
from lkps_testkit import EntraDouble, ServerThread
from tests.conftest import AGENT_2, API_AUDIENCE, LIVEKIT_SECRET, LIVEKIT_URL, Lkps, Served

pytestmark = pytest.mark.api


def test_register_heartbeat_deregister(served: Served) -> None:
    agent_token = served.entra.app_token(audience=API_AUDIENCE, client_app_id=AGENT_2)
    with LkpsClient(served.url, token=agent_token) as agent:
        registration = agent.register_agent(version="1.2.3", enforce_client_authz=False)
        assert registration.agent_name == AGENT_2
        assert registration.livekit_url == LIVEKIT_URL
        assert registration.expires_at > datetime.now(UTC)
        assert registration.heartbeat_interval_seconds > 0
        assert registration.presence_ttl_seconds > registration.heartbeat_interval_seconds
        assert registration.request_id
        assert registration.agent_connection == "direct" and registration.gateway_url is None
        assert registration.worker_url == LIVEKIT_URL
        # The worker token is a bearer credential: never in a repr that may reach a log.
        assert registration.token not in repr(registration)
        claims = jwt.decode(registration.token, LIVEKIT_SECRET, algorithms=["HS256"])
        assert {grant for grant, given in claims["video"].items() if given} == {"agent"}

        heartbeat = agent.agent_heartbeat(registration.registration_id)
        assert heartbeat.connected
        assert heartbeat.presence_expires_at > datetime.now(UTC)

        renewed = agent.register_agent(
            registration_id=registration.registration_id, enforce_client_authz=False
        )
        assert renewed.registration_id == registration.registration_id

        with LkpsClient(served.url, token=served.user_token()) as client:
            client.start_session(AGENT_2)  # present, not enforcing
            agent.deregister_agent(registration.registration_id)
            with pytest.raises(AgentNotConnectedError):
                client.start_session(AGENT_2)
        with pytest.raises(RegistrationGoneError) as gone:
            agent.agent_heartbeat(registration.registration_id)
        assert gone.value.status_code == 404


def test_gateway_registration(settings_values: dict[str, Any], entra: EntraDouble) -> None:
    settings = Settings(**(settings_values | {"agent_connection": "gateway"}))
    with ServerThread(create_app(settings)) as server:
        agent_token = entra.app_token(audience=API_AUDIENCE, client_app_id=AGENT_2)
        with LkpsClient(server.url, token=agent_token) as agent:
            registration = agent.register_agent()
    assert registration.agent_connection == "gateway"
    assert registration.gateway_url == server.url.replace("http://", "ws://")
    assert registration.worker_url == registration.gateway_url
    assert registration.livekit_url == LIVEKIT_URL
    assert registration.token not in repr(registration)


def test_a_user_cannot_register_as_an_agent(served: Served) -> None:
    with (
        LkpsClient(served.url, token=served.user_token()) as client,
        pytest.raises(NotAuthorizedError),
    ):
        client.register_agent()


async def test_async_agent_calls(lkps: Lkps) -> None:
    transport = httpx.ASGITransport(app=lkps.app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://lkps") as http,
        AsyncLkpsClient("http://lkps", token=lkps.app_token(AGENT_2), http_client=http) as agent,
    ):
        registration = await agent.register_agent(metadata={"team": "voice"})
        assert registration.agent_name == AGENT_2
        assert (await agent.agent_heartbeat(registration.registration_id)).connected
        await agent.deregister_agent()  # every registration of the agent
        with pytest.raises(RegistrationGoneError):
            await agent.agent_heartbeat()


def _rate_limited(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        429,
        json={"error": "rate_limited", "message": "Too many requests", "request_id": "r-1"},
        headers={"Retry-After": "7"},
    )


def test_429_is_rate_limited_with_retry_after() -> None:
    http = httpx.Client(transport=httpx.MockTransport(_rate_limited))
    with (
        LkpsClient("https://lkps.test", token="t0ken", http_client=http) as client,
        pytest.raises(RateLimitedError) as caught,
    ):
        client.register_agent()
    assert isinstance(caught.value, LkpsError)
    assert (caught.value.status_code, caught.value.retry_after) == (429, 7.0)
    assert caught.value.request_id == "r-1"


def test_429_is_retried_when_asked() -> None:
    answers = iter(
        [
            httpx.Response(
                429, json={"error": "rate_limited", "message": "x"}, headers={"Retry-After": "0"}
            ),
            httpx.Response(204),
        ]
    )
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(answers)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with LkpsClient("https://lkps.test", token="t0ken", retries=1, http_client=http) as client:
        client.deregister_agent("c0ffee00-0000-4000-8000-000000000001")
    assert len(seen) == 2
    assert seen[0].read() == b'{"registration_id":"c0ffee00-0000-4000-8000-000000000001"}'
