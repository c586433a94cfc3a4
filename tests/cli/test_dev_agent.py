"""`lkps dev agent`: the example agent against `lkps dev` and its livekit-server, as the
newcomer's second command runs it.

The tests that run the agent share one `lkps dev` (module-scoped, kept in one xdist
process by its group), and it runs with LKPS_AGENT_CONNECTION=gateway: the worker connects
through LKPS's `/agent`, not to LiveKit. The default (direct) loop is the one
tests/e2e/test_playground.py drives in Chromium, so each mode has one whole stack."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from livekit import rtc

from lkps.cli.dev import DEV_AGENT_ID, DEV_CLIENT_ID
from tests.devstack import DevStack, dev_stack, session_when_present
from tests.processes import clean_environment, free_port, run_lkps

pytestmark = [
    pytest.mark.cli,
    pytest.mark.filterwarnings("ignore:The HMAC key is:jwt.warnings.InsecureKeyLengthWarning"),
]
# Both tests on the shared stack run in one process, so that they do share it.
SHARED_STACK = pytest.mark.xdist_group("dev-agent-stack")

TOPIC = "lkps.example"
OTHER_AGENT = "5b8f5b1e-7a4c-4e0e-9d7e-0d6c2f3a9b10"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """`LKPS_AGENT_CONNECTION=gateway lkps dev` with the real livekit-server."""
    workdir = tmp_path_factory.mktemp("dev-stack")
    with dev_stack(workdir, LKPS_AGENT_CONNECTION="gateway") as running:
        yield running


async def talk(livekit_url: str, token: str) -> list[dict[str, Any]]:
    """Join, wait for the agent's greeting, send "ping", wait for its echo."""
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    room = rtc.Room()

    @room.on("data_received")
    def on_data(packet: rtc.DataPacket) -> None:
        if packet.topic == TOPIC:
            message = json.loads(packet.data)
            if "greeting" in message or "echo" in message:
                received.put_nowait(message)

    await asyncio.wait_for(room.connect(livekit_url, token), 30)
    try:
        greeting = await asyncio.wait_for(received.get(), 90)
        await room.local_participant.publish_data("ping", topic=TOPIC, reliable=True)
        echo = await asyncio.wait_for(received.get(), 30)
        return [greeting, echo]
    finally:
        await room.disconnect()


def user_token(stack: DevStack) -> str:
    """A dev user's token (`lkps dev token` reads the key in the stack's folder)."""
    return run_lkps("dev", "token", "--user", "alice", env=stack.env, cwd=stack.workdir).stdout


def gateway_workers(stack: DevStack, agent: str) -> list[dict[str, Any]]:
    """The agent's worker connections through the gateway, as GET /api/agents lists them."""
    token = run_lkps(
        "dev", "token", "--app", DEV_CLIENT_ID, "--role", "LKPS.Auditor",
        env=stack.env, cwd=stack.workdir,
    ).stdout.strip()  # fmt: skip
    answer = httpx.get(
        f"{stack.url}/api/agents", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    [listed] = [entry for entry in answer.json()["agents"] if entry["agent_id"] == agent]
    workers: list[dict[str, Any]] = listed["workers"]
    return workers


@SHARED_STACK
def test_dev_agent_answers_a_session_through_the_gateway(stack: DevStack) -> None:
    assert "agents         gateway (" in stack.process.log_text()
    agent = stack.agent(log_name="dev-agent-default").start()
    try:
        session = session_when_present(stack.url, user_token(stack).strip())
        assert session["livekit_url"] == stack.livekit_url
        greeting, echo = asyncio.run(talk(session["livekit_url"], session["participant_token"]))
        assert greeting == {
            "greeting": f"hello from {DEV_AGENT_ID}",
            "metadata": {"from": "test"},
        }
        assert echo == {"echo": "ping"}
        # Present because its worker holds a gateway connection, not from heartbeats.
        [worker] = gateway_workers(stack, DEV_AGENT_ID)
        assert worker["registered"] is True
    finally:
        agent.stop()
    log = agent.log_text()
    assert f"as agent {DEV_AGENT_ID}" in log
    assert "LIVEKIT_API_SECRET" not in log
    assert 'WebSocket /agent\\" [accepted]' in stack.process.log_text()


@SHARED_STACK
def test_dev_agent_as_another_agent_is_present_for_the_dev_client(stack: DevStack) -> None:
    agent = stack.agent("--agent", OTHER_AGENT.upper(), log_name="dev-agent-other").start()
    try:
        # Not on the allow-list: started with client authorization off, so the dev
        # client's session start reaches it rather than getting 403.
        session = session_when_present(stack.url, user_token(stack).strip(), OTHER_AGENT)
        assert OTHER_AGENT in session["room_name"]
    finally:
        agent.stop()
    assert f"as agent {OTHER_AGENT}" in agent.log_text()


def test_dev_agent_says_when_no_instance_answers(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = run_lkps(
        "dev", "agent", "--url", nowhere, "--wait", "1", env=clean_environment(), cwd=tmp_path
    )
    assert result.returncode == 1
    assert f"cannot reach LKPS at {nowhere}" in result.stderr
    assert "Traceback" not in result.stderr


def test_dev_agent_refuses_what_is_not_an_app_id(tmp_path: Path) -> None:
    result = run_lkps("dev", "agent", "--agent", "my-agent", env=clean_environment(), cwd=tmp_path)
    assert result.returncode == 2
    assert "is not an app id" in result.stderr


def test_dev_agent_refuses_a_non_dev_environment(tmp_path: Path) -> None:
    result = run_lkps("dev", "agent", env=clean_environment(LKPS_ENV="np"), cwd=tmp_path)
    assert result.returncode == 2
    assert "only runs with LKPS_ENV=dev" in result.stderr
