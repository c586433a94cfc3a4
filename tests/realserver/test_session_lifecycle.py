"""Sessions followed through a real livekit-server's webhooks (`webhook.urls` pointed at
LKPS, signed with LiveKit's API key): a full session shows every step and its duration;
an agent that never joins yields `session.agent_missing` and the one re-dispatch, which
real LiveKit accepts with the session's metadata; a token used again after the end
recreates the room, and LKPS records `session.reopened`.

The "agent" here is a participant with LiveKit's agent kind (as livekit-agents joins a
job's room), so no worker process is needed to see what LiveKit reports about it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from livekit import api, rtc

from lkps.app import create_app
from lkps.config import Settings
from lkps_testkit import EntraDouble, ServerThread
from tests.conftest import AGENT, API_AUDIENCE, CLIENT_A
from tests.realserver.conftest import RealLiveKit, free_port, running_livekit

pytestmark = [pytest.mark.e2e, pytest.mark.backends("sqlite")]

STEP_TIMEOUT = 30.0  # seconds, for every wait on LiveKit or its webhooks
JOIN_TIMEOUT = 2.0  # LKPS_AGENT_JOIN_TIMEOUT_SECONDS in these tests


@dataclass
class Stack:
    lkps: str
    livekit: RealLiveKit
    entra: EntraDouble

    def user(self, username: str = "alice", **claims: Any) -> dict[str, str]:
        token = self.entra.user_token(
            client_app_id=CLIENT_A, username=username, audience=API_AUDIENCE, **claims
        )
        return {"Authorization": f"Bearer {token}"}

    def auditor(self) -> dict[str, str]:
        return self.user("ops.auditor", roles=["LKPS.Auditor"])

    def start(self, **metadata: Any) -> dict[str, Any]:
        agent = self.entra.app_token(client_app_id=AGENT, audience=API_AUDIENCE)
        registered = httpx.post(
            f"{self.lkps}/api/agent/register",
            json={},
            headers={"Authorization": f"Bearer {agent}"},
        )
        assert registered.status_code == 200, registered.text
        body: dict[str, Any] = {"agent_entra_app_id": AGENT}
        if metadata:
            body["metadata"] = metadata
        started = httpx.post(f"{self.lkps}/api/session/start", json=body, headers=self.user())
        assert started.status_code == 200, started.text
        document: dict[str, Any] = started.json()
        return document

    def session(self, session_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.lkps}/api/sessions/{session_id}", headers=self.user())
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        return document

    def records(self, room: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.lkps}/api/audit", params={"limit": 1000}, headers=self.auditor()
        )
        assert response.status_code == 200, response.text
        found = [r for r in response.json()["records"] if r["room_name"] == room]
        return sorted(found, key=lambda record: record["seq"])

    async def until(
        self, session_id: str, done: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """The session once `done` says so, as webhooks arrive."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            view = await asyncio.to_thread(self.session, session_id)
            if done(view):
                return view
            if time.monotonic() > deadline:
                pytest.fail(f"session never got there: {json.dumps(view, indent=1)}")
            await asyncio.sleep(0.2)

    def agent_token(self, room: str, identity: str = "agent-AJ_lifecycle") -> str:
        return (
            api.AccessToken(self.livekit.api_key, self.livekit.api_secret)
            .with_identity(identity)
            .with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=room, agent=True))
            .to_jwt()
        )

    @asynccontextmanager
    async def server_api(self) -> AsyncIterator[api.LiveKitAPI]:
        async with api.LiveKitAPI(
            self.livekit.http_url, self.livekit.api_key, self.livekit.api_secret
        ) as lk:
            yield lk


@pytest.fixture
def stack(tmp_path: Path, settings_values: dict[str, Any], entra: EntraDouble) -> Iterator[Stack]:
    """LKPS on a socket, and a livekit-server whose webhooks go to it."""
    lkps_port = free_port()
    webhook = f"http://127.0.0.1:{lkps_port}/api/livekit/webhook"
    with running_livekit(tmp_path, webhook_url=webhook) as livekit:
        settings = Settings(
            **{
                **settings_values,
                "livekit_url": livekit.url,
                "livekit_api_key": livekit.api_key,
                "livekit_api_secret": livekit.api_secret,
                "agent_join_timeout_seconds": JOIN_TIMEOUT,
            }
        )
        with ServerThread(create_app(settings), port=lkps_port) as server:
            yield Stack(server.url, livekit, entra)


@asynccontextmanager
async def joined(url: str, token: str) -> AsyncIterator[rtc.Room]:
    room = rtc.Room()
    await asyncio.wait_for(room.connect(url, token), STEP_TIMEOUT)
    try:
        yield room
    finally:
        await asyncio.wait_for(room.disconnect(), STEP_TIMEOUT)


async def end_room(stack: Stack, room: str) -> None:
    """End the room now rather than after its departure timeout."""
    await stack.livekit.end_room(room)


async def test_a_full_session_shows_every_step_and_its_duration(stack: Stack) -> None:
    session = stack.start()
    session_id, room, url = session["session_id"], session["room_name"], stack.livekit.url
    async with joined(url, session["participant_token"]):
        await stack.until(session_id, lambda s: s["state"] == "client_joined")
        async with joined(url, stack.agent_token(room)):
            await stack.until(session_id, lambda s: s["state"] == "agent_joined")
            await asyncio.sleep(1)  # a call that lasts
    await end_room(stack, room)
    view = await stack.until(session_id, lambda s: s["state"] == "ended")

    assert [step["step"] for step in view["steps"]] == [
        "granted",
        "client_joined",
        "agent_joined",
        "ended",
    ]
    assert view["final_state"] == "agent_joined"
    assert view["duration_seconds"] >= 1
    assert view["room_sid"].startswith("RM_")
    assert view["client_identity"] == "alice" and view["client_sid"].startswith("PA_")
    assert view["agent_identity"] == "agent-AJ_lifecycle" and view["job_id"] == "AJ_lifecycle"
    events = [r["event"] for r in await asyncio.to_thread(stack.records, room)]
    assert events == [
        "session.start",
        "session.client_joined",
        "session.agent_joined",
        "session.ended",
    ]


async def test_an_agent_that_never_joins_is_missing_and_dispatched_once_more(
    stack: Stack,
) -> None:
    session = stack.start(topic="billing")
    session_id, room, url = session["session_id"], session["room_name"], stack.livekit.url
    async with joined(url, session["participant_token"]):
        view = await stack.until(session_id, lambda s: s["redispatch_id"] is not None)
        assert view["state"] == "client_joined" and view["redispatched"] is True
        async with stack.server_api() as lk:
            dispatches = await lk.agent_dispatch.list_dispatch(room)
        # The token's own dispatch, and LKPS's one retry, with the same metadata.
        assert sorted((d.agent_name, d.metadata) for d in dispatches) == [
            (AGENT, '{"topic":"billing"}'),
            (AGENT, '{"topic":"billing"}'),
        ]
        assert view["redispatch_id"] in {d.id for d in dispatches}
        # Whether the agent then arrived is recorded too.
        async with joined(url, stack.agent_token(room)):
            await stack.until(session_id, lambda s: s["state"] == "agent_joined")
    await end_room(stack, room)
    await stack.until(session_id, lambda s: s["state"] == "ended")
    records = await asyncio.to_thread(stack.records, room)
    assert [r["event"] for r in records] == [
        "session.start",
        "session.client_joined",
        "session.agent_missing",
        "session.redispatched",
        "session.agent_joined",
        "session.ended",
    ]
    assert records[3]["details"]["dispatched"] is True
    assert records[4]["details"]["after_redispatch"] is True


async def test_a_token_used_again_after_the_end_is_recorded_as_reopened(stack: Stack) -> None:
    session = stack.start()
    session_id, room, url = session["session_id"], session["room_name"], stack.livekit.url
    async with joined(url, session["participant_token"]):
        await stack.until(session_id, lambda s: s["state"] == "client_joined")
    await end_room(stack, room)
    ended = await stack.until(session_id, lambda s: s["state"] == "ended")
    # The same token, still valid: LiveKit recreates the room (and dispatches again).
    async with joined(url, session["participant_token"]) as again:
        assert again.name == room
        view = await stack.until(session_id, lambda s: s["state"] == "reopened")
    assert view["reopened_room_sid"] != ended["room_sid"]
    assert view["ended_at"] == ended["ended_at"]  # the session's end stays the first
    events = [r["event"] for r in await asyncio.to_thread(stack.records, room)]
    assert events[-1] == "session.reopened" and events.count("session.reopened") == 1
