"""RoomService and AgentDispatchService through the official `livekit-api` client:
the calls LKPS makes, LiveKit's grant checks, and Twirp errors."""

from __future__ import annotations

import json

import aiohttp
import pytest
from livekit import api
from livekit.protocol import agent_dispatch
from livekit.protocol import room as room_pb

from lkps_testkit.livekit import LiveKitDouble

pytestmark = pytest.mark.e2e


async def test_create_list_and_delete_rooms(livekit: LiveKitDouble, lkapi: api.LiveKitAPI) -> None:
    created = await lkapi.room.create_room(
        room_pb.CreateRoomRequest(name="demo", max_participants=3, empty_timeout=60)
    )
    assert (created.name, created.max_participants, created.empty_timeout) == ("demo", 3, 60)
    assert created.sid.startswith("RM_")
    assert created.departure_timeout == 20  # LiveKit's default
    await lkapi.room.create_room(room_pb.CreateRoomRequest(name="other"))

    listed = await lkapi.room.list_rooms(room_pb.ListRoomsRequest())
    assert sorted(r.name for r in listed.rooms) == ["demo", "other"]
    only = await lkapi.room.list_rooms(room_pb.ListRoomsRequest(names=["demo"]))
    assert [r.sid for r in only.rooms] == [created.sid]

    await lkapi.room.delete_room(room_pb.DeleteRoomRequest(room="demo"))
    listed = await lkapi.room.list_rooms(room_pb.ListRoomsRequest())
    assert [r.name for r in listed.rooms] == ["other"]
    [closed] = [r for r in livekit.rooms(active_only=False) if r.name == "demo"]
    assert closed.close_reason == "deleted"


async def test_creating_an_existing_room_returns_it_unchanged(lkapi: api.LiveKitAPI) -> None:
    first = await lkapi.room.create_room(room_pb.CreateRoomRequest(name="demo", max_participants=2))
    again = await lkapi.room.create_room(room_pb.CreateRoomRequest(name="demo", max_participants=9))
    assert (again.sid, again.max_participants) == (first.sid, 2)


async def test_list_get_and_remove_participants(
    livekit: LiveKitDouble, lkapi: api.LiveKitAPI
) -> None:
    livekit.join(livekit.token("alice", room="demo"))
    livekit.join(livekit.token("bob", room="demo"))
    listed = await lkapi.room.list_participants(room_pb.ListParticipantsRequest(room="demo"))
    assert sorted(p.identity for p in listed.participants) == ["alice", "bob"]

    alice = await lkapi.room.get_participant(
        room_pb.RoomParticipantIdentity(room="demo", identity="alice")
    )
    assert alice.sid.startswith("PA_")

    await lkapi.room.remove_participant(
        room_pb.RoomParticipantIdentity(room="demo", identity="alice")
    )
    listed = await lkapi.room.list_participants(room_pb.ListParticipantsRequest(room="demo"))
    assert [p.identity for p in listed.participants] == ["bob"]
    with pytest.raises(api.TwirpError) as caught:
        await lkapi.room.remove_participant(
            room_pb.RoomParticipantIdentity(room="demo", identity="alice")
        )
    assert (caught.value.code, caught.value.status) == ("not_found", 404)


async def test_deleting_an_unknown_room_is_not_found(lkapi: api.LiveKitAPI) -> None:
    with pytest.raises(api.TwirpError) as caught:
        await lkapi.room.delete_room(room_pb.DeleteRoomRequest(room="nowhere"))
    assert (caught.value.code, caught.value.status) == ("not_found", 404)
    assert caught.value.message == "requested room does not exist"


async def test_dispatches_are_created_listed_and_deleted(
    livekit: LiveKitDouble, lkapi: api.LiveKitAPI
) -> None:
    created = await lkapi.agent_dispatch.create_dispatch(
        agent_dispatch.CreateAgentDispatchRequest(
            agent_name="helper", room="demo", metadata='{"topic": "billing"}'
        )
    )
    assert created.id.startswith("AD_")
    assert (created.agent_name, created.metadata) == ("helper", '{"topic": "billing"}')
    # CreateDispatch creates the room (LiveKit's auto_create), with its implicit dispatch.
    assert livekit.room("demo") is not None
    listed = await lkapi.agent_dispatch.list_dispatch("demo")
    assert sorted(d.agent_name for d in listed) == ["", "helper"]
    assert await lkapi.agent_dispatch.get_dispatch(created.id, "demo") == next(
        d for d in listed if d.id == created.id
    )

    deleted = await lkapi.agent_dispatch.delete_dispatch(created.id, "demo")
    assert deleted.state.deleted_at > 0
    assert [d.agent_name for d in await lkapi.agent_dispatch.list_dispatch("demo")] == [""]
    with pytest.raises(api.TwirpError) as caught:
        await lkapi.agent_dispatch.delete_dispatch(created.id, "demo")
    assert caught.value.code == "not_found"


async def test_listing_dispatches_of_an_unknown_room_is_not_found(lkapi: api.LiveKitAPI) -> None:
    with pytest.raises(api.TwirpError) as caught:
        await lkapi.agent_dispatch.list_dispatch("nowhere")
    assert caught.value.code == "not_found"


def scoped(livekit: LiveKitDouble, grants: api.VideoGrants) -> api.LiveKitAPI:
    """A client whose every call carries exactly these grants."""
    return api.LiveKitAPI.with_token(livekit.token("backend", grants=grants), livekit.http_url)


@pytest.mark.parametrize(
    "grants",
    [
        api.VideoGrants(room_join=True, room="demo"),
        api.VideoGrants(room_list=True),
        api.VideoGrants(room_admin=True, room="demo"),
    ],
    ids=["join-only", "list-only", "admin-only"],
)
async def test_creating_a_room_needs_room_create(
    livekit: LiveKitDouble, grants: api.VideoGrants
) -> None:
    async with scoped(livekit, grants) as client:
        with pytest.raises(api.TwirpError) as caught:
            await client.room.create_room(room_pb.CreateRoomRequest(name="demo"))
    # LiveKit wraps every missing grant as `unauthenticated` (its twirpAuthError).
    assert (caught.value.code, caught.value.status) == ("unauthenticated", 401)
    assert caught.value.message == "permissions denied"
    assert livekit.rooms() == []


async def test_each_call_needs_its_own_grant(livekit: LiveKitDouble) -> None:
    livekit.join(livekit.token("alice", room="demo"))
    async with scoped(livekit, api.VideoGrants(room_create=True)) as creator:
        await creator.room.create_room(room_pb.CreateRoomRequest(name="other"))
        with pytest.raises(api.TwirpError, match="unauthenticated"):
            await creator.room.list_rooms(room_pb.ListRoomsRequest())
        with pytest.raises(api.TwirpError, match="unauthenticated"):
            await creator.room.list_participants(room_pb.ListParticipantsRequest(room="demo"))
    async with scoped(livekit, api.VideoGrants(room_list=True)) as lister:
        rooms = await lister.room.list_rooms(room_pb.ListRoomsRequest())
        assert sorted(r.name for r in rooms.rooms) == ["demo", "other"]
        with pytest.raises(api.TwirpError, match="unauthenticated"):
            await lister.room.delete_room(room_pb.DeleteRoomRequest(room="demo"))


async def test_room_admin_is_for_one_room_only(livekit: LiveKitDouble) -> None:
    livekit.join(livekit.token("alice", room="demo"))
    livekit.join(livekit.token("bob", room="other"))
    async with scoped(livekit, api.VideoGrants(room_admin=True, room="demo")) as admin:
        listed = await admin.room.list_participants(room_pb.ListParticipantsRequest(room="demo"))
        assert [p.identity for p in listed.participants] == ["alice"]
        for call in (
            admin.room.list_participants(room_pb.ListParticipantsRequest(room="other")),
            admin.agent_dispatch.list_dispatch("other"),
            admin.agent_dispatch.create_dispatch(
                agent_dispatch.CreateAgentDispatchRequest(agent_name="helper", room="other")
            ),
        ):
            with pytest.raises(api.TwirpError) as caught:
                await call
            assert caught.value.code == "unauthenticated"
    assert livekit.dispatches("other")[0].implicit  # no dispatch was added
    assert len(livekit.dispatches("other")) == 1


async def twirp_post(
    livekit: LiveKitDouble, path: str, body: bytes, content_type: str, token: str | None = None
) -> tuple[int, str, bytes]:
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{livekit.http_url}/twirp/{path}", data=body, headers=headers) as response,
    ):
        return response.status, response.content_type, await response.read()


async def test_json_requests_get_json_answers(livekit: LiveKitDouble) -> None:
    token = livekit.token(grants=api.VideoGrants(room_create=True))
    status, content_type, body = await twirp_post(
        livekit,
        "livekit.RoomService/CreateRoom",
        json.dumps({"name": "demo", "maxParticipants": 4}).encode(),
        "application/json",
        token,
    )
    assert (status, content_type) == (200, "application/json")
    room = json.loads(body)
    assert (room["name"], room["max_participants"], room["metadata"]) == ("demo", 4, "")


async def test_twirp_errors_are_json(livekit: LiveKitDouble) -> None:
    token = livekit.token(grants=api.VideoGrants(room_create=True))
    cases = [
        ("livekit.RoomService/Nope", b"{}", "application/json", 404, "bad_route"),
        ("livekit.RoomService/CreateRoom", b"{}", "text/plain", 404, "bad_route"),
        ("livekit.RoomService/CreateRoom", b"not json", "application/json", 400, "malformed"),
        ("livekit.RoomService/CreateRoom", b"\xff\xff", "application/protobuf", 400, "malformed"),
    ]
    for path, body, content_type, expected_status, code in cases:
        status, answer_type, answer = await twirp_post(livekit, path, body, content_type, token)
        assert (status, answer_type, json.loads(answer)["code"]) == (
            expected_status,
            "application/json",
            code,
        ), path
    status, _, answer = await twirp_post(
        livekit, "livekit.RoomService/ListRooms", b"{}", "application/json"
    )
    assert (status, json.loads(answer)) == (
        401,
        {"code": "unauthenticated", "msg": "permissions denied"},
    )
