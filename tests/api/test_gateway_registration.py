"""What registration hands an agent in gateway mode (LKPS_AGENT_CONNECTION=gateway), and
that direct mode answers exactly as before."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from livekit.api import TokenVerifier
from pydantic import SecretStr

from lkps.config import Settings
from lkps.gateway import GatewayCredentials
from tests.api.util import running_lkps
from tests.conftest import AGENT, LIVEKIT_SECRET, LIVEKIT_URL, FakeClock

pytestmark = pytest.mark.api

DIRECT_FIELDS = {
    "agent_name",
    "livekit_url",
    "token",
    "expires_at",
    "heartbeat_interval_seconds",
    "presence_ttl_seconds",
    "registration_id",
}


async def test_direct_mode_answers_as_before(
    settings_values: dict[str, Any], clock: FakeClock, entra: Any, livekit_verifier: TokenVerifier
) -> None:
    async with running_lkps(settings_values, clock, entra) as lkps:
        body = (await lkps.register()).json()
    assert set(body) == DIRECT_FIELDS
    assert livekit_verifier.verify(body["token"]).video.agent is True  # type: ignore[union-attr]


async def test_gateway_mode_hands_out_a_gateway_credential_and_url(
    settings_values: dict[str, Any], clock: FakeClock, entra: Any, livekit_verifier: TokenVerifier
) -> None:
    settings_values["agent_connection"] = "gateway"
    async with running_lkps(settings_values, clock, entra) as lkps:
        response = await lkps.register()
        renewed = await lkps.register(registration_id=response.json()["registration_id"])
        records = await lkps.audit_records()
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == DIRECT_FIELDS | {"agent_connection", "gateway_url"}
    assert body["agent_connection"] == "gateway"
    assert body["gateway_url"] == "ws://lkps.test"  # the URL the request came in on
    assert body["livekit_url"] == LIVEKIT_URL  # rooms are joined at LiveKit
    claims = GatewayCredentials(SecretStr(LIVEKIT_SECRET), clock).verify(body["token"])
    assert claims.agent_id == AGENT and claims.registration_id == body["registration_id"]
    with pytest.raises(jwt.InvalidTokenError):
        livekit_verifier.verify(body["token"])  # LiveKit refuses it
    assert renewed.json()["registration_id"] == body["registration_id"]
    assert renewed.json()["agent_connection"] == "gateway"
    assert records[-1].as_json()["details"]["agent_connection"] == "gateway"
    assert body["token"] not in str([record.as_json() for record in records])


@pytest.mark.parametrize(
    ("configured", "headers", "expected"),
    [
        ("wss://agents.example.com/lkps", {}, "wss://agents.example.com/lkps"),
        ("", {"host": "lkps.internal:8443"}, "ws://lkps.internal:8443"),
    ],
)
async def test_gateway_url_is_configured_or_derived(
    settings_values: dict[str, Any],
    clock: FakeClock,
    entra: Any,
    configured: str,
    headers: dict[str, str],
    expected: str,
) -> None:
    settings_values |= {"agent_connection": "gateway", "agent_gateway_url": configured}
    async with running_lkps(settings_values, clock, entra) as lkps:
        response = await lkps.http.post(
            "/api/agent/register",
            json={},
            headers={"Authorization": f"Bearer {lkps.app_token(AGENT)}"} | headers,
        )
    assert response.json()["gateway_url"] == expected


def test_gateway_url_must_be_a_websocket_url(settings_values: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        Settings(**(settings_values | {"agent_gateway_url": "https://lkps.example"}))
