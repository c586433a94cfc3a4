"""Room creation from a token's `roomConfig`, LiveKit's way: limits that do not count
agents, a configuration ignored once the room exists, timeouts that close idle rooms,
and the `/_double/*` HTTP controls for tests in other processes."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest
from livekit import api
from livekit.protocol import agent_dispatch
from livekit.protocol import room as room_pb

from lkps_testkit.livekit import LiveKitDouble, ServiceError

pytestmark = pytest.mark.e2e


def config(
    *agents: tuple[str, str],
    max_participants: int = 0,
    empty_timeout: int = 0,
    departure_timeout: int = 0,
) -> room_pb.RoomConfiguration:
    """A room configuration dispatching `agents`, given as (agent name, metadata)."""
    return room_pb.RoomConfiguration(
        max_participants=max_participants,
        empty_timeout=empty_timeout,
        departure_timeout=departure_timeout,
        agents=[agent_dispatch.RoomAgentDispatch(agent_name=n, metadata=m) for n, m in agents],
    )


def test_the_first_join_creates_the_room_from_the_token(livekit: LiveKitDouble) -> None:
    token = livekit.token(
        "alice",
        room="demo",
        room_config=config(
            ("helper", '{"case": 1}'), max_participants=2, empty_timeout=30, departure_timeout=5
        ),
    )
    livekit.join(token)
    room = livekit.room("demo")
    assert room is not None
    assert (room.max_participants, room.empty_timeout, room.departure_timeout) == (2, 30, 5)
    [dispatch] = livekit.dispatches("demo")
    assert (dispatch.agent_name, dispatch.metadata, dispatch.implicit) == (
        "helper",
        '{"case": 1}',
        False,
    )


def test_a_room_without_agents_gets_livekits_implicit_dispatch(livekit: LiveKitDouble) -> None:
    livekit.join(livekit.token("alice", room="demo"))
    room = livekit.room("demo")
    assert room is not None
    assert (room.empty_timeout, room.departure_timeout, room.max_participants) == (300, 20, 0)
    [dispatch] = livekit.dispatches("demo")
    assert (dispatch.agent_name, dispatch.implicit) == ("", True)
    # Nobody registered for automatic dispatch: normal, not a dropped job.
    assert livekit.dropped_dispatches == []


def test_max_participants_does_not_count_agents(livekit: LiveKitDouble) -> None:
    limited = config(max_participants=1)
    livekit.join(livekit.token("alice", room="demo", room_config=limited))
    for name in ("agent-1", "agent-2"):
        assert livekit.join(livekit.token(name, room="demo", kind="agent")).dependent
    with pytest.raises(ServiceError) as caught:
        livekit.join(livekit.token("bob", room="demo"))
    assert (caught.value.code, caught.value.status) == ("resource_exhausted", 429)
    assert caught.value.message == "room has exceeded its max participants"
    identities = sorted(p.identity for p in livekit.participants("demo"))
    assert identities == ["agent-1", "agent-2", "alice"]


def test_a_place_freed_by_leaving_can_be_taken(livekit: LiveKitDouble) -> None:
    livekit.join(livekit.token("alice", room="demo", room_config=config(max_participants=1)))
    livekit.leave("demo", "alice")
    assert livekit.join(livekit.token("bob", room="demo")).identity == "bob"


def test_joining_again_replaces_the_participant(livekit: LiveKitDouble) -> None:
    token = livekit.token("alice", room="demo", room_config=config(max_participants=1))
    first = livekit.join(token)
    second = livekit.join(token)
    assert [p.sid for p in livekit.participants("demo")] == [second.sid]
    [replaced] = [p for p in livekit.participants("demo", active_only=False) if p.sid == first.sid]
    assert replaced.disconnect_reason == "DUPLICATE_IDENTITY"


def test_room_config_is_ignored_when_the_room_exists(livekit: LiveKitDouble) -> None:
    livekit.join(
        livekit.token("alice", room="demo", room_config=config(("first", "1"), max_participants=2))
    )
    livekit.join(
        livekit.token("bob", room="demo", room_config=config(("second", "2"), max_participants=9))
    )
    room = livekit.room("demo")
    assert room is not None
    assert room.max_participants == 2
    assert [d.agent_name for d in livekit.dispatches("demo")] == ["first"]
    with pytest.raises(ServiceError):
        livekit.join(livekit.token("carol", room="demo"))


async def test_room_config_is_ignored_for_a_room_made_by_create_room(
    livekit: LiveKitDouble, lkapi: api.LiveKitAPI
) -> None:
    await lkapi.room.create_room(room_pb.CreateRoomRequest(name="demo", max_participants=1))
    token = livekit.token(
        "alice", room="demo", room_config=config(("helper", ""), max_participants=5)
    )
    await livekit.join_async(token)
    room = livekit.room("demo")
    assert room is not None and room.max_participants == 1
    assert [d.agent_name for d in livekit.dispatches("demo")] == [""]


def test_an_unknown_room_preset_is_refused(livekit: LiveKitDouble) -> None:
    token = livekit.token("alice", room="demo")
    claims = jwt.decode(token, livekit.api_secret, algorithms=["HS256"])
    preset = jwt.encode({**claims, "roomPreset": "big"}, livekit.api_secret, algorithm="HS256")
    with pytest.raises(ServiceError) as caught:
        livekit.join(preset)
    assert caught.value.code == "invalid_argument"
    assert livekit.rooms() == []


def test_an_empty_room_closes_after_its_empty_timeout(livekit: LiveKitDouble) -> None:
    livekit.join(
        livekit.token("agent", room="demo", kind="agent", room_config=config(empty_timeout=1))
    )
    created = time.monotonic()
    livekit.wait_until(lambda: livekit.room("demo") is None, timeout=5)
    assert time.monotonic() - created >= 0.5  # not at once: it waited for the timeout
    [closed] = livekit.rooms(active_only=False)
    assert closed.close_reason == "empty timeout"
    [agent] = livekit.participants("demo", active_only=False)
    assert agent.disconnect_reason == "ROOM_CLOSED"


def test_a_room_closes_after_its_departure_timeout(livekit: LiveKitDouble) -> None:
    token = livekit.token(
        "alice", room="demo", room_config=config(empty_timeout=1, departure_timeout=1)
    )
    livekit.join(token)
    time.sleep(1.3)  # past the empty timeout: a participant keeps the room open
    assert livekit.room("demo") is not None
    livekit.leave("demo", "alice")
    livekit.wait_until(lambda: livekit.room("demo") is None, timeout=5)
    assert livekit.rooms(active_only=False)[0].close_reason == "departure timeout"


def test_http_join_leave_and_state(livekit: LiveKitDouble) -> None:
    with httpx.Client(base_url=livekit.http_url) as http:
        token = livekit.token("alice", room="demo", room_config=config(max_participants=1))
        joined = http.post("/_double/join", json={"token": token})
        assert joined.status_code == 200, joined.text
        body = joined.json()
        assert (body["participant"]["identity"], body["room"]["max_participants"]) == ("alice", 1)

        full = http.post("/_double/join", json={"token": livekit.token("bob", room="demo")})
        assert (full.status_code, full.json()["code"]) == (429, "resource_exhausted")
        bad = http.post("/_double/join", json={"token": "nope"})
        assert (bad.status_code, bad.json()) == (401, {"error": "invalid authorization token"})

        left = http.post("/_double/leave", json={"room": "demo", "identity": "alice"})
        assert left.json()["participant"]["disconnect_reason"] == "CLIENT_INITIATED"
        again = http.post("/_double/leave", json={"room": "demo", "identity": "alice"})
        assert again.status_code == 404

        state = http.get("/_double/state").json()
    assert [r["name"] for r in state["rooms"]] == ["demo"]
    assert [p["identity"] for p in state["participants"]] == ["alice"]
    assert state["dropped_dispatches"] == [] and state["workers"] == []
