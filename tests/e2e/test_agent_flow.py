"""An agent's whole life through LKPS, with real processes on 127.0.0.1: the example agent
(lkps-agent) and `lkps serve` as processes, the LiveKit double and the Entra double in
threads of the test. Each test counts what LiveKit, LKPS and the agent saw."""

from __future__ import annotations

import json
import re
import time

import aiohttp
import httpx
import jwt
import pytest

from lkps_testkit.livekit import LiveKitDouble, TokenError
from tests.conftest import AGENT, API_AUDIENCE, LIVEKIT_KEY, LIVEKIT_SECRET
from tests.e2e.conftest import Stack, StackFactory
from tests.e2e.harness import (
    AGENT_SECRET,
    AgentProcess,
    session_status,
    session_when_present,
    start_session,
    user_token,
    wait_for,
)
from tests.processes import free_port, listening

# livekit-agents' fixed port 8081 is held throughout: every agent here binds one of its own.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.backends("sqlite"),
    pytest.mark.usefixtures("livekit_agents_port_taken"),
]

JWT = re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}")


def worker_connections(livekit: LiveKitDouble) -> list[str]:
    """Fingerprints of the tokens AGENT's worker connected with, in order."""
    return [w.token_fingerprint for w in livekit.workers(AGENT, connected_only=False)]


def connected_worker(stack: Stack, agent: AgentProcess, timeout: float = 90) -> None:
    """Until the agent's worker is registered with LiveKit (and LKPS counts it present)."""
    wait_for(
        lambda: stack.livekit.workers(AGENT, connected_only=True) or not agent.running,
        timeout=timeout,
        what="the agent's worker connecting to LiveKit",
    )
    assert agent.running, agent.log_text()[-3000:]


def assert_logs_hold_no_secret(stack: Stack, *agents: AgentProcess) -> None:
    texts = [agent.log_text() for agent in agents]
    assert stack.lkps is not None
    texts.append(stack.lkps.log_text())
    for text in texts:
        assert not JWT.findall(text), JWT.findall(text)[:1]
        assert AGENT_SECRET not in text
        assert LIVEKIT_SECRET not in text


def test_a_session_reaches_the_agents_entrypoint(make_stack: StackFactory) -> None:
    stack = make_stack()
    agent = stack.start_agent()
    connected_worker(stack, agent)

    # The worker connected with the token LKPS issued: LKPS's key, the agent grant only,
    # the agent's app id as its name.
    [worker] = stack.livekit.workers(AGENT)
    assert worker.api_key == LIVEKIT_KEY
    assert {grant for grant, given in worker.claims["video"].items() if given} == {"agent"}
    assert worker.agent_name == AGENT
    # It reports the load the harness chose (AGENT_FIXED_LOAD, through lkps-agent's
    # load_fnc), not the shared machine's CPU: the status update comes every 2.5 s.
    wait_for(
        lambda: [w for w in stack.livekit.workers(AGENT) if w.load == pytest.approx(0.05)],
        timeout=15,
        what="the worker reporting its fixed load",
    )

    metadata = {"language": "de", "ticket": 4711, "nested": {"ok": [1, 2]}}
    session = session_when_present(stack.lkps_url, stack.entra, metadata)
    participant = stack.livekit.join(session.participant_token)
    assert participant.room == session.room_name

    job = stack.livekit.wait_for_job(AGENT, room=session.room_name)
    # LiveKit hands the agent the request's metadata exactly as the client sent it.
    assert json.loads(job.metadata) == metadata
    reports = wait_for(agent.reports, timeout=30, what="the entrypoint running")
    assert [(report["room"], report["metadata"]) for report in reports] == [
        (session.room_name, metadata)
    ]
    room = stack.livekit.room(session.room_name)
    assert room is not None
    assert (room.max_participants, room.departure_timeout) == (2, 30)
    assert stack.livekit.dropped_dispatches == []
    assert_logs_hold_no_secret(stack, agent)


def test_the_agent_is_present_only_while_livekit_can_dispatch_to_it(
    make_stack: StackFactory,
) -> None:
    # LiveKit is not there yet: the agent registers with LKPS, its worker cannot connect.
    port = free_port()
    stack = make_stack(LKPS_LIVEKIT_URL=f"ws://127.0.0.1:{port}")
    agent = stack.start_agent()
    wait_for(
        lambda: agent.log_count('"registered with LKPS"'),
        timeout=60,
        what="the agent registering with LKPS",
    )
    wait_for(
        lambda: agent.log_count("failed to connect to livekit"),
        timeout=30,
        what="the worker failing to reach LiveKit",
    )
    # A session now would be dispatched to nobody (LiveKit drops such jobs silently):
    # LKPS says the agent is not connected instead.
    assert session_status(stack.lkps_url, stack.entra) == 404

    with LiveKitDouble(api_key=LIVEKIT_KEY, api_secret=LIVEKIT_SECRET, port=port) as livekit:
        session = session_when_present(stack.lkps_url, stack.entra, {"late": True}, timeout=60)
        assert livekit.workers(AGENT)
        livekit.join(session.participant_token)
        livekit.wait_for_job(AGENT, room=session.room_name)
        assert livekit.dropped_dispatches == []

        # LiveKit goes away again: within moments LKPS stops sending sessions.
        livekit.close_workers(AGENT)
    wait_for(
        lambda: session_status(stack.lkps_url, stack.entra) == 404,
        timeout=15,
        what="404 once the worker lost LiveKit",
    )
    assert agent.log_count('"worker lost its LiveKit connection"') >= 1


def test_livekit_refusing_lkps_tokens_stops_the_agent_with_a_clear_error(
    make_stack: StackFactory,
) -> None:
    # LKPS signs with a secret this LiveKit does not know (a rotation done on one side).
    stack = make_stack(LKPS_LIVEKIT_API_SECRET="a-secret-livekit-has-never-heard-of-32+chars")
    agent = stack.start_agent()
    wait_for(lambda: not agent.running, timeout=90, what="the agent stopping")
    assert agent.wait(timeout=5) == 1  # a process manager sees the failure
    log = agent.log_text()
    # Not silent retries: the first 401 is reported and answered with a fresh token; the
    # second one ends the agent, saying who can fix it.
    assert log.count("LiveKit rejected the worker token (HTTP 401)") == 1
    assert "LiveKit rejected the worker token LKPS issued moments ago" in log
    assert "Ask the LKPS operators" in log
    assert agent.log_count('"renewed the LKPS registration"') == 1
    assert stack.livekit.workers(AGENT, connected_only=False) == []  # never let in
    # It deregistered on the way out, and was never present (its worker never connected).
    assert agent.log_count('"deregistered from LKPS"') == 1
    assert session_status(stack.lkps_url, stack.entra) == 404
    assert_logs_hold_no_secret(stack, agent)


def test_an_agent_whose_http_port_is_taken_exits_non_zero_saying_so(
    make_stack: StackFactory,
) -> None:
    stack = make_stack()
    with listening(port := free_port()):
        agent = stack.start_agent(http_port=port)
        status = agent.wait(timeout=90)
    log = agent.log_text()
    assert status == 1, log[-3000:]
    [line] = [line for line in log.splitlines() if line.startswith("lkps-agent:")]
    assert line.startswith("lkps-agent: the agent could not start:"), line
    assert f":{port})" in line or f", {port})" in line, line
    assert "address already in use" in line
    assert "LkpsAgentServer(port=...)" in line
    # It had registered first, and deregistered on the way out.
    assert agent.log_count('"deregistered from LKPS"') == 1
    assert session_status(stack.lkps_url, stack.entra) == 404
    assert_logs_hold_no_secret(stack, agent)


def test_the_worker_reconnects_with_a_renewed_token(make_stack: StackFactory) -> None:
    # A 12 s worker token: the SDK renews it at ~9.6 s; the double drops the worker's
    # connection when the token it connected with expires.
    stack = make_stack(LKPS_AGENT_TOKEN_TTL="12")
    agent = stack.start_agent()
    connected_worker(stack, agent)
    [first] = stack.livekit.workers(AGENT, connected_only=False)
    wait_for(
        lambda: (
            len(stack.livekit.workers(AGENT, connected_only=True)) == 1
            and len(worker_connections(stack.livekit)) >= 2
        ),
        timeout=40,
        what="the worker reconnecting after its token expired",
    )
    first_after, second = stack.livekit.workers(AGENT, connected_only=False)[:2]
    assert first_after.disconnected_at is not None
    assert second.token_fingerprint != first.token_fingerprint
    assert second.token_expires_at > first.token_expires_at
    assert agent.running  # the same process: no restart
    assert agent.log_count('"renewed the LKPS registration"') >= 1

    # Still reachable through the new connection.
    session = session_when_present(stack.lkps_url, stack.entra, {"after": "renewal"})
    stack.livekit.join(session.participant_token)
    job = stack.livekit.wait_for_job(AGENT, room=session.room_name)
    [current] = stack.livekit.workers(AGENT)
    assert job.worker_id == current.id
    assert_logs_hold_no_secret(stack, agent)


def test_a_graceful_stop_ends_presence_at_once_and_a_kill_after_the_ttl(
    make_stack: StackFactory,
) -> None:
    stack = make_stack(LKPS_PRESENCE_TTL="6", LKPS_HEARTBEAT_INTERVAL="2")
    agent = stack.start_agent()
    connected_worker(stack, agent)
    session_when_present(stack.lkps_url, stack.entra, {})

    stopped = time.monotonic()
    agent.terminate()
    wait_for(
        lambda: session_status(stack.lkps_url, stack.entra) == 404,
        timeout=5,
        what="404 after the agent's graceful stop",
    )
    assert time.monotonic() - stopped < 5  # deregistered, not waiting out the TTL
    assert agent.stop() == 0
    assert agent.log_count('"deregistered from LKPS"') == 1

    killed_agent = stack.start_agent()
    connected_worker(stack, killed_agent)
    session_when_present(stack.lkps_url, stack.entra, {})
    killed_agent.kill()
    killed = time.monotonic()
    # LKPS cannot know yet: the registration lives until the presence TTL runs out...
    assert session_status(stack.lkps_url, stack.entra) == 200
    wait_for(
        lambda: session_status(stack.lkps_url, stack.entra) == 404,
        timeout=15,
        what="404 after the presence TTL of a killed agent",
        every=0.5,
    )
    gone_after = time.monotonic() - killed
    # ...and not much longer than it (6 s TTL, heartbeats every 2 s).
    assert 3 <= gone_after <= 10, gone_after


def test_the_agent_outlives_an_lkps_outage(make_stack: StackFactory) -> None:
    stack = make_stack(LKPS_PRESENCE_TTL="6", LKPS_HEARTBEAT_INTERVAL="2")
    agent = stack.start_agent()
    connected_worker(stack, agent)
    session_when_present(stack.lkps_url, stack.entra, {})
    connections = worker_connections(stack.livekit)

    assert stack.lkps is not None
    stack.lkps.stop()
    # Longer than the presence TTL: LKPS will have forgotten the agent's presence.
    wait_for(
        lambda: agent.log_count(r"LKPS keep-alive failed; retrying") >= 3,
        timeout=30,
        what="the agent retrying while LKPS is down",
    )
    time.sleep(4)
    assert agent.running
    # The worker kept its LiveKit connection all along.
    assert worker_connections(stack.livekit) == connections
    assert len(stack.livekit.workers(AGENT, connected_only=True)) == 1

    stack.start_lkps()
    session = session_when_present(stack.lkps_url, stack.entra, {"after": "outage"}, timeout=60)
    stack.livekit.join(session.participant_token)
    stack.livekit.wait_for_job(AGENT, room=session.room_name)
    assert worker_connections(stack.livekit) == connections
    # The lapsed registration was replaced by a new one, not resurrected by a crash.
    assert agent.log_count('"LKPS no longer knows this registration; registering again"') >= 1
    assert_logs_hold_no_secret(stack, agent)


async def test_tokens_only_open_what_they_were_issued_for(make_stack: StackFactory) -> None:
    stack = make_stack()
    livekit = stack.livekit
    agent_app_token = stack.entra.app_token(audience=API_AUDIENCE, client_app_id=AGENT)
    registered = httpx.post(
        f"{stack.lkps_url}/api/agent/register",
        json={"enforce_client_authz": True},
        headers={"Authorization": f"Bearer {agent_app_token}"},
    )
    assert registered.status_code == 200, registered.text
    worker_token = registered.json()["token"]
    session_a = start_session(stack.lkps_url, stack.entra, {})
    session_b = start_session(stack.lkps_url, stack.entra, {})

    # An agent-grant token cannot join a room.
    with pytest.raises(TokenError):
        livekit.join(worker_token)
    with pytest.raises(TokenError):
        livekit.join(worker_token, room=session_a.room_name)
    response = httpx.post(f"{livekit.http_url}/_double/join", json={"token": worker_token})
    assert response.status_code == 401

    # A participant token cannot register a worker.
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(
                f"{livekit.url}/agent",
                headers={"Authorization": f"Bearer {session_a.participant_token}"},
            )
        assert refused.value.status == 401
        # The worker token opens it (the control).
        socket = await http.ws_connect(
            f"{livekit.url}/agent", headers={"Authorization": f"Bearer {worker_token}"}
        )
        await socket.close()

    # A participant token for room A cannot put anyone in room B: the token's room wins.
    livekit.join(session_b.participant_token)
    joined = livekit.join(session_a.participant_token, room=session_b.room_name)
    assert joined.room == session_a.room_name
    assert [p.identity for p in livekit.participants(session_b.room_name)] == ["alice"]
    claims = jwt.decode(session_a.participant_token, LIVEKIT_SECRET, algorithms=["HS256"])
    assert claims["video"]["room"] == session_a.room_name
    assert user_token(stack.entra)  # the client's own Entra token never reaches LiveKit
