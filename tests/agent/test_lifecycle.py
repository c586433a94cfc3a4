"""`AgentLifecycle` against a scripted LKPS and a fake clock: when it registers, beats,
renews and retries, and which answers end the agent. (The same lifecycle against the
real LKPS is in test_against_lkps.py.)"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lkps_agent import (
    AgentConfig,
    AgentLifecycle,
    AgentState,
    LiveKitRejectedTokenError,
    LkpsAgentError,
    RegistrationRefusedError,
)
from lkps_client import (
    AgentRegistration,
    AuthenticationError,
    BadRequestError,
    Heartbeat,
    NotAuthorizedError,
    NotFoundError,
    RateLimitedError,
    RegistrationGoneError,
    ServiceUnavailableError,
    TransportError,
)

pytestmark = pytest.mark.unit

AGENT = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
CONFIG = AgentConfig(
    lkps_url="https://lkps.test",
    scope="api://lkps.test/.default",
    auth="secret",
    tenant_id="t",
    client_id=AGENT,
    client_secret="s3cret",
    enforce_client_authz=True,
    version="1.0.0",
)
TOKEN_TTL = 3600
HEARTBEAT = 30


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        for _ in range(5):  # a sleep cancelled in these turns of the loop let no time pass
            await asyncio.sleep(0)
        self.now += seconds
        await asyncio.sleep(0)


Answer = Any  # a value to return, an exception to raise, or a callable producing either


@dataclass
class ScriptedLkps:
    """Answers register/heartbeat/deregister from per-call scripts (then defaults), and
    records every call."""

    clock: FakeClock
    register_script: list[Answer] = field(default_factory=list)
    heartbeat_script: list[Answer] = field(default_factory=list)
    deregister_script: list[Answer] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    gateway_url: str | None = None
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _tokens: itertools.count[int] = field(default_factory=itertools.count)

    def registration(self, registration_id: str | None) -> AgentRegistration:
        return AgentRegistration(
            agent_name=AGENT,
            livekit_url="wss://livekit.test",
            token=f"lk-token-{next(self._tokens)}",
            expires_at=datetime.fromtimestamp(self.clock.now + TOKEN_TTL, UTC),
            heartbeat_interval_seconds=HEARTBEAT,
            presence_ttl_seconds=90,
            registration_id=registration_id or f"reg-{next(self._ids)}",
            request_id="req",
            agent_connection="gateway" if self.gateway_url else "direct",
            gateway_url=self.gateway_url,
        )

    def _answer(self, script: list[Answer], default: Callable[[], Any]) -> Any:
        answer = script.pop(0) if script else default
        if callable(answer) and not isinstance(answer, type):
            answer = answer()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def register_agent(self, **body: Any) -> AgentRegistration:
        self.calls.append(("register", body))
        return self._answer(  # type: ignore[no-any-return]
            self.register_script, lambda: self.registration(body.get("registration_id"))
        )

    async def agent_heartbeat(
        self, registration_id: str | None = None, *, worker_connected: bool | None = None
    ) -> Heartbeat:
        self.calls.append(
            (
                "heartbeat",
                {"registration_id": registration_id, "worker_connected": worker_connected},
            )
        )
        return self._answer(  # type: ignore[no-any-return]
            self.heartbeat_script,
            lambda: Heartbeat(True, datetime.fromtimestamp(self.clock.now + 90, UTC)),
        )

    async def deregister_agent(self, registration_id: str | None = None) -> None:
        self.calls.append(("deregister", {"registration_id": registration_id}))
        self._answer(self.deregister_script, lambda: None)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def unavailable(retry_after: float | None = None) -> ServiceUnavailableError:
    return ServiceUnavailableError(503, "service_unavailable", "down", "r", retry_after=retry_after)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lkps(clock: FakeClock) -> ScriptedLkps:
    return ScriptedLkps(clock)


@pytest.fixture
def fatal() -> list[LkpsAgentError]:
    return []


@pytest.fixture
def lifecycle(lkps: ScriptedLkps, clock: FakeClock, fatal: list[LkpsAgentError]) -> AgentLifecycle:
    return AgentLifecycle(
        lkps,  # type: ignore[arg-type]
        CONFIG,
        on_fatal=fatal.append,
        clock=clock,
        sleep=clock.sleep,
        jitter=lambda: 0.5,
    )


async def run_until(clock: FakeClock, moment: float) -> None:
    """Let the background task run until the fake clock reaches `moment`."""
    for _ in range(10_000):
        if clock.now >= moment:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"the clock stopped at {clock.now}, before {moment}")


async def test_registers_with_the_configured_body(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps
) -> None:
    registration = await lifecycle.start()
    assert lkps.calls == [
        (
            "register",
            {
                "enforce_client_authz": True,
                "version": "1.0.0",
                "metadata": None,
                "registration_id": None,
                # Not dispatchable until LiveKit has the worker: see worker_connected.
                "worker_connected": False,
            },
        )
    ]
    status = lifecycle.status()
    assert status.state is AgentState.REGISTERED
    assert status.healthy
    assert (status.agent_name, status.registration_id) == (AGENT, registration.registration_id)
    assert status.last_error is None
    await lifecycle.stop()


async def test_heartbeats_at_the_interval_lkps_returns(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps, clock: FakeClock
) -> None:
    start = clock.now
    registration = await lifecycle.start()
    await run_until(clock, start + 5 * HEARTBEAT)
    beats = [body for name, body in lkps.calls if name == "heartbeat"]
    assert len(beats) >= 4
    assert all(body["registration_id"] == registration.registration_id for body in beats)
    assert clock.sleeps[:4] == [HEARTBEAT] * 4
    await lifecycle.stop()


async def test_worker_connection_changes_reach_lkps_at_once(
    lifecycle: AgentLifecycle,
    lkps: ScriptedLkps,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", "lkps_agent")
    start = clock.now
    await lifecycle.start()
    await asyncio.sleep(0)  # the keep-alive task is asleep until the first heartbeat
    lifecycle.worker_connected(True)
    for _ in range(100):
        if lkps.names()[-1:] == ["heartbeat"]:
            break
        await asyncio.sleep(0)
    assert lkps.calls[-1] == (
        "heartbeat",
        {"registration_id": lifecycle.status().registration_id, "worker_connected": True},
    )
    assert clock.now < start + HEARTBEAT  # not at the next scheduled heartbeat
    assert lifecycle.status().worker_connected
    lifecycle.worker_connected(False)
    for _ in range(100):
        if lkps.calls[-1][1].get("worker_connected") is False:
            break
        await asyncio.sleep(0)
    assert lkps.calls[-1][1]["worker_connected"] is False
    lifecycle.worker_connected(False)  # no change: nothing to tell LKPS
    assert caplog.text.count("worker lost its LiveKit connection") == 1
    await lifecycle.stop()


async def test_renewals_carry_the_worker_state(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps, clock: FakeClock
) -> None:
    await lifecycle.start()
    lifecycle.worker_connected(True)
    await lifecycle.stop(deregister=False)
    clock.now += 0.9 * TOKEN_TTL
    await lifecycle.worker_token()
    assert lkps.calls[-1][0] == "register"
    assert lkps.calls[-1][1]["worker_connected"] is True


async def test_renews_the_token_after_80_percent_of_its_lifetime(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps, clock: FakeClock
) -> None:
    start = clock.now
    first = await lifecycle.start()
    await run_until(clock, start + 0.8 * TOKEN_TTL + 1)
    registers = [body for name, body in lkps.calls if name == "register"]
    assert len(registers) == 2
    # Renewal keeps the registration (and re-sends the agent's settings: a renewal
    # without them would reset enforcement to LKPS's default).
    assert registers[1]["registration_id"] == first.registration_id
    assert registers[1]["enforce_client_authz"] is True
    assert await lifecycle.worker_token() != first.token
    await lifecycle.stop()


async def test_worker_token_renews_first_when_due(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps, clock: FakeClock
) -> None:
    first = await lifecycle.start()
    await lifecycle.stop(deregister=False)  # no background task: only worker_token renews
    clock.now += 0.9 * TOKEN_TTL
    token = await lifecycle.worker_token()
    assert token != first.token
    assert lkps.names() == ["register", "register"]
    assert lifecycle.status().worker_connections == 1


async def test_the_gateway_follows_the_registration(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps, clock: FakeClock
) -> None:
    await lifecycle.start()
    await lifecycle.stop(deregister=False)
    assert lifecycle.gateway_url() is None  # direct: the socket goes to LiveKit
    # LKPS switched to gateway mode: the renewal before the next reconnect says so.
    lkps.gateway_url = "wss://lkps.test"
    clock.now += 0.9 * TOKEN_TTL
    token = await lifecycle.worker_token()
    assert lifecycle.gateway_url() == "wss://lkps.test"
    assert lifecycle.registration is not None and lifecycle.registration.token == token


async def test_worker_token_survives_lkps_down_with_the_current_token(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps, clock: FakeClock
) -> None:
    first = await lifecycle.start()
    await lifecycle.stop(deregister=False)
    clock.now += 0.9 * TOKEN_TTL
    lkps.register_script.append(TransportError(None, "transport_error", "refused", "r"))
    assert await lifecycle.worker_token() == first.token
    status = lifecycle.status()
    assert status.state is AgentState.DEGRADED
    assert "refused" in (status.last_error or "")


async def test_first_registration_retries_with_backoff_and_retry_after(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps, clock: FakeClock
) -> None:
    lkps.register_script += [
        TransportError(None, "transport_error", "connection refused", "r"),
        TransportError(None, "transport_error", "connection refused", "r"),
        unavailable(retry_after=20),
        RateLimitedError(429, "rate_limited", "slow down", "r", retry_after=7),
        OSError("Entra unreachable"),
    ]
    await lifecycle.start()
    assert lkps.names() == ["register"] * 6
    # Exponential with half jitter (jitter fixed at 0.5: 3/4 of the ceiling), at least
    # what Retry-After asks.
    assert clock.sleeps == [0.75, 1.5, 20, 7, 12.0]
    assert lifecycle.status().state is AgentState.REGISTERED
    assert lifecycle.status().consecutive_failures == 0
    await lifecycle.stop()


async def test_backoff_is_capped(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps, clock: FakeClock
) -> None:
    lkps.register_script += [unavailable()] * 12
    await lifecycle.start()
    assert max(clock.sleeps) == 45.0  # 3/4 of the 60 s cap
    await lifecycle.stop()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            NotAuthorizedError(403, "forbidden", "Agents register with an app-only token", "r"),
            "app-only",
        ),
        (BadRequestError(400, "bad_request", "version too long", "r"), "malformed"),
        (NotFoundError(404, "http_404", "Not Found", "r"), "LKPS_URL"),
    ],
)
async def test_answers_that_will_not_heal_stop_the_agent(
    lifecycle: AgentLifecycle,
    lkps: ScriptedLkps,
    fatal: list[LkpsAgentError],
    error: Exception,
    expected: str,
) -> None:
    lkps.register_script.append(error)
    with pytest.raises(RegistrationRefusedError, match=expected):
        await lifecycle.start()
    assert lkps.names() == ["register"]  # no retry
    assert lifecycle.status().state is AgentState.FAILED
    assert len(fatal) == 1


async def test_401s_are_retried_a_few_times_then_stop(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps
) -> None:
    rejected = AuthenticationError(401, "unauthorized", "Invalid token audience", "r")
    lkps.register_script += [rejected] * 5
    with pytest.raises(RegistrationRefusedError, match=r"5 times in a row.*api://lkps.test"):
        await lifecycle.start()
    assert lkps.names() == ["register"] * 5


async def test_a_401_that_heals_is_forgotten(lifecycle: AgentLifecycle, lkps: ScriptedLkps) -> None:
    rejected = AuthenticationError(401, "unauthorized", "Signature verification failed", "r")
    lkps.register_script += [rejected] * 4
    await lifecycle.start()
    assert lifecycle.status().state is AgentState.REGISTERED
    await lifecycle.stop()


async def test_entra_configuration_errors_stop_the_agent(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps
) -> None:
    class ClientAuthenticationError(Exception):
        """Shaped like azure-core's."""

    lkps.register_script.append(
        ClientAuthenticationError("ClientSecretCredential: AADSTS7000215: Invalid client secret")
    )
    with pytest.raises(RegistrationRefusedError, match=r"AADSTS7000215.*'secret'"):
        await lifecycle.start()


async def test_heartbeat_failures_degrade_and_recover(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps, clock: FakeClock
) -> None:
    start = clock.now
    registration = await lifecycle.start()
    lkps.heartbeat_script += [unavailable(), unavailable(), TransportError(None, "t", "reset", "r")]
    await run_until(clock, start + HEARTBEAT + 1)
    assert lifecycle.status().state is AgentState.DEGRADED
    # Degraded within the presence TTL: sessions still reach the agent.
    assert lifecycle.status().healthy
    await run_until(clock, start + 3 * HEARTBEAT)
    status = lifecycle.status()
    assert status.state is AgentState.REGISTERED
    assert status.registration_id == registration.registration_id
    assert "register" not in lkps.names()[1:]
    await lifecycle.stop()


async def test_a_lapsed_registration_registers_anew(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps, clock: FakeClock
) -> None:
    start = clock.now
    first = await lifecycle.start()
    lkps.heartbeat_script.append(RegistrationGoneError(404, "not_found", "gone", "r"))
    await run_until(clock, start + HEARTBEAT + 1)
    registers = [body for name, body in lkps.calls if name == "register"]
    assert len(registers) == 2
    assert registers[1]["registration_id"] is None  # a new registration, not a renewal
    assert lifecycle.status().registration_id != first.registration_id
    await lifecycle.stop()


async def test_livekit_401_renews_once_then_stops(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps, fatal: list[LkpsAgentError]
) -> None:
    first = await lifecycle.start()
    await lifecycle.livekit_rejected(first.token)
    assert lkps.names().count("register") == 2
    fresh = await lifecycle.worker_token()
    assert fresh != first.token
    assert not fatal
    # The token issued in answer to the 401 is refused too: renewing cannot help.
    await lifecycle.livekit_rejected(fresh)
    assert len(fatal) == 1
    assert isinstance(fatal[0], LiveKitRejectedTokenError)
    assert "API key and secret" in str(fatal[0])
    assert lifecycle.status().state is AgentState.FAILED
    await lifecycle.stop()


async def test_livekit_accepting_a_token_resets_the_401_count(
    lifecycle: AgentLifecycle, fatal: list[LkpsAgentError]
) -> None:
    first = await lifecycle.start()
    await lifecycle.livekit_rejected(first.token)
    fresh = await lifecycle.worker_token()
    lifecycle.livekit_accepted()
    await lifecycle.livekit_rejected(fresh)  # e.g. after a LiveKit secret rotation
    assert not fatal
    await lifecycle.stop()


async def test_stop_deregisters_once(lifecycle: AgentLifecycle, lkps: ScriptedLkps) -> None:
    registration = await lifecycle.start()
    await lifecycle.stop()
    await lifecycle.stop()
    assert ("deregister", {"registration_id": registration.registration_id}) in lkps.calls
    assert lkps.names().count("deregister") == 1
    assert lifecycle.status().state is AgentState.STOPPED


async def test_nothing_registers_again_after_stop(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps, clock: FakeClock
) -> None:
    first = await lifecycle.start()
    await lifecycle.stop()  # a drain: the worker may still reconnect for running jobs
    clock.now += TOKEN_TTL
    assert await lifecycle.worker_token() == first.token
    await lifecycle.livekit_rejected(first.token)
    await lifecycle.stop()
    assert lkps.names() == ["register", "deregister"]


async def test_stop_does_not_hang_when_lkps_is_down(
    lifecycle: AgentLifecycle, lkps: ScriptedLkps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lkps_agent._lifecycle.DEREGISTER_TIMEOUT_SECONDS", 0.05)
    await lifecycle.start()
    original = lkps.deregister_agent

    async def hanging(registration_id: str | None = None) -> None:
        await original(registration_id)
        await asyncio.sleep(3600)

    lkps.deregister_agent = hanging  # type: ignore[method-assign]
    await asyncio.wait_for(lifecycle.stop(), 2)
    assert lifecycle.status().state is AgentState.STOPPED


async def test_status_and_config_never_show_the_token_or_secret(
    lifecycle: AgentLifecycle,
) -> None:
    # Both are made for logs and health endpoints.
    registration = await lifecycle.start()
    assert registration.token not in repr(lifecycle.status())
    assert registration.token not in repr(registration)
    assert "s3cret" not in repr(CONFIG)
    await lifecycle.stop()


async def test_presence_expiry_is_tracked(lifecycle: AgentLifecycle, clock: FakeClock) -> None:
    await lifecycle.start()
    expires = lifecycle.status().presence_expires_at
    assert expires is not None
    assert expires - datetime.fromtimestamp(clock.now, UTC) == timedelta(seconds=90)
    await lifecycle.stop()
