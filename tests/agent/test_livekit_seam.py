"""The seam between lkps-agent and livekit-agents' internals: it must fail loudly the day
an upgrade changes them. (A real worker through the seam, against the LiveKit double and a
real livekit-server: tests/e2e/test_agent_flow.py, tests/realserver/test_agent_e2e.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from livekit.agents import AgentServer

from lkps_agent import (
    AgentConfig,
    ConfigurationError,
    LkpsAgentServer,
    UnsupportedLiveKitAgentsError,
)
from lkps_agent import _livekit_seam as seam

pytestmark = pytest.mark.unit

CONFIG = AgentConfig(lkps_url="https://lkps.test", scope="api://lkps.test/.default")


def test_the_installed_release_is_supported() -> None:
    seam.check_supported()  # the locked livekit-agents: if this fails, the seam broke


@pytest.mark.parametrize("version", ["1.8.8", "1.9.0", "2.0.0", "1.9.0rc1"])
def test_releases_outside_the_tested_range_are_refused(
    monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    monkeypatch.setattr(seam, "livekit_agents_version", version)
    with pytest.raises(UnsupportedLiveKitAgentsError, match=rf">=1\.8\.9,<1\.9\.0; {version}"):
        seam.check_supported()


def test_the_range_matches_the_distribution_pin() -> None:
    from importlib.metadata import requires

    pins = [pin for pin in requires("lkps-agent") or [] if pin.startswith("livekit-agents")]
    assert pins == ["livekit-agents<1.9,>=1.8.9"]
    assert seam.SUPPORTED_RANGE == ((1, 8, 9), (1, 9, 0))


def test_a_changed_connection_task_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def _connection_task(self: Any) -> None:
        # A future release that builds its token somewhere the seam does not reach.
        token = "signed elsewhere"
        await self._ws.connect(token)

    monkeypatch.setattr(AgentServer, "_connection_task", _connection_task)
    with pytest.raises(UnsupportedLiveKitAgentsError, match=r"self\._http_session\.ws_connect"):
        seam.check_supported()


def test_a_missing_method_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(AgentServer, "_reload_jobs")
    with pytest.raises(UnsupportedLiveKitAgentsError, match="_reload_jobs is gone"):
        seam.check_supported()


def test_placeholder_credentials_are_random_and_named() -> None:
    key, secret = seam.placeholder_credentials()
    assert key == "lkps-agent-has-no-api-key"
    assert len(secret) >= 32
    assert secret != seam.placeholder_credentials()[1]


@pytest.mark.parametrize("option", ["api_key", "api_secret", "ws_url"])
def test_static_livekit_options_are_refused(option: str) -> None:
    options: dict[str, Any] = {option: "x"}
    with pytest.raises(ConfigurationError, match=f"takes no {option}"):
        LkpsAgentServer(config=CONFIG, **options)


def test_livekit_environment_credentials_are_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", "APIstatic")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "static-secret")
    server = LkpsAgentServer(config=CONFIG)
    assert server._api_key == "lkps-agent-has-no-api-key"
    assert server._api_secret != "static-secret"


class RecordingTokens:
    def __init__(self, gateway: str | None = None) -> None:
        self.gateway = gateway
        self.rejected: list[str] = []
        self.accepted = 0
        self.issued = 0
        self.connection_changes: list[bool] = []

    async def worker_token(self) -> str:
        self.issued += 1
        return f"lkps-token-{self.issued}"

    def gateway_url(self) -> str | None:
        return self.gateway

    async def livekit_rejected(self, token: str) -> None:
        self.rejected.append(token)

    def livekit_accepted(self) -> None:
        self.accepted += 1

    def worker_connected(self, connected: bool) -> None:
        self.connection_changes.append(connected)


class FakeSession:
    """Stands in for aiohttp's session: records ws_connect calls, answers as told."""

    def __init__(self, answer: BaseException | None = None) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    async def ws_connect(self, url: str, **kwargs: Any) -> str:
        self.calls.append((url, kwargs))
        if self.answer is not None:
            raise self.answer
        return "socket"

    async def close(self) -> None:
        self.closed = True


def handshake_error(status: int) -> aiohttp.WSServerHandshakeError:
    """What aiohttp raises when the server answers the upgrade with `status`."""
    return aiohttp.WSServerHandshakeError(
        request_info=None,  # type: ignore[arg-type]
        history=(),
        status=status,
        message="Invalid Status",
    )


def seamed(tokens: RecordingTokens, session: FakeSession) -> seam.SeamedAgentServer:
    server = seam.SeamedAgentServer(api_key="k", api_secret="s")
    server._use_tokens(tokens)
    server._http_session = session  # type: ignore[assignment]  # as AgentServer.run does
    return server


async def test_the_worker_socket_carries_the_lkps_token() -> None:
    tokens, session = RecordingTokens(), FakeSession()
    server = seamed(tokens, session)
    signed_by_livekit_agents = {"Authorization": "Bearer self-signed-with-placeholder"}
    socket = await server._http_session.ws_connect(
        "ws://livekit.test/agent", headers=signed_by_livekit_agents, heartbeat=30
    )
    assert socket == "socket"
    (url, kwargs) = session.calls[0]
    assert url == "ws://livekit.test/agent"
    assert kwargs["headers"] == {"Authorization": "Bearer lkps-token-1"}
    assert kwargs["heartbeat"] == 30
    assert tokens.accepted == 1
    # Everything else on the session is the session's own.
    await server._http_session.close()
    assert session.closed


@pytest.mark.parametrize(
    ("gateway", "dialled"),
    [
        ("ws://lkps.test:8080", "ws://lkps.test:8080/agent"),
        ("wss://lkps.example/base/", "wss://lkps.example/base/agent"),
        ("https://lkps.example", "wss://lkps.example/agent"),
    ],
)
async def test_with_a_gateway_the_worker_socket_dials_it(gateway: str, dialled: str) -> None:
    tokens, session = RecordingTokens(gateway), FakeSession()
    server = seamed(tokens, session)
    await server._http_session.ws_connect(
        "ws://livekit.test/agent", params={"worker_token": "x"}, heartbeat=30
    )
    (url, kwargs) = session.calls[0]
    assert url == dialled
    assert kwargs["headers"] == {"Authorization": "Bearer lkps-token-1"}
    assert kwargs["params"] == {"worker_token": "x"} and kwargs["heartbeat"] == 30
    # Rooms are still joined at LiveKit: the worker's ws_url is not the gateway.
    await server._http_session.ws_connect("ws://livekit.test/rtc")
    assert session.calls[1][0] == "ws://livekit.test/rtc"


async def test_a_reconnect_reports_the_lost_connection_first() -> None:
    tokens, session = RecordingTokens(), FakeSession()
    server = seamed(tokens, session)
    await server._http_session.ws_connect("ws://livekit.test/agent")
    assert tokens.connection_changes == []  # connected is LiveKit's register answer
    await server._http_session.ws_connect("ws://livekit.test/agent")
    assert tokens.connection_changes == [False]
    assert [kwargs["headers"]["Authorization"] for _, kwargs in session.calls] == [
        "Bearer lkps-token-1",
        "Bearer lkps-token-2",
    ]


async def test_other_sockets_are_left_alone() -> None:
    tokens, session = RecordingTokens(), FakeSession()
    server = seamed(tokens, session)
    await server._http_session.ws_connect("ws://livekit.test/rtc", headers={"X": "1"})
    assert session.calls[0][1]["headers"] == {"X": "1"}
    assert tokens.issued == 0


async def test_a_401_is_reported_then_raised() -> None:
    refused = handshake_error(401)
    tokens, session = RecordingTokens(), FakeSession(refused)
    server = seamed(tokens, session)
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await server._http_session.ws_connect("ws://livekit.test/agent")
    assert tokens.rejected == ["lkps-token-1"]
    assert tokens.accepted == 0


async def test_other_handshake_failures_are_not_rejections() -> None:
    unavailable = handshake_error(503)
    tokens, session = RecordingTokens(), FakeSession(unavailable)
    server = seamed(tokens, session)
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await server._http_session.ws_connect("ws://livekit.test/agent")
    assert tokens.rejected == []


async def test_dev_reload_of_running_jobs_is_a_logged_no_op(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = seam.SeamedAgentServer(api_key="k", api_secret="s")
    await server._reload_jobs([object(), object()])
    assert "2 running job(s) are not carried over" in caplog.text
    await asyncio.sleep(0)
