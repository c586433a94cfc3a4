"""LKPS's LiveKit tokens against a real LiveKit server.

The tokens come from LKPS's own `TokenMinter` and `dispatch_room_config`, the code that
issues them in production (`livekit.api.AccessToken` with roomJoin + room +
canPublish/canSubscribe/canPublishData and a `roomConfig` of max_participants=2, a
departure timeout and one agent dispatch; the agent token has only the `agent` grant).
Clients are the `livekit` rtc SDK and `livekit.api.LiveKitAPI`; every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import aiohttp
import pytest
from livekit import api, rtc
from pydantic import SecretStr

from lkps.clock import SystemClock
from lkps.livekit.tokens import DEPARTURE_TIMEOUT_SECONDS, TokenMinter, dispatch_room_config
from tests.realserver.conftest import RealLiveKit

pytestmark = pytest.mark.e2e

AGENT_NAME = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"  # LKPS dispatches agents by app id
DISPATCH_METADATA = json.dumps({"session_id": "s-1", "user": "alice@example.com"})
TTL = timedelta(minutes=10)
STEP_TIMEOUT = 20.0  # seconds, for every single wait on the server


@pytest.fixture
def minter(livekit_server: RealLiveKit) -> TokenMinter:
    return TokenMinter(livekit_server.api_key, SecretStr(livekit_server.api_secret), SystemClock())


def room_name(label: str) -> str:
    return f"lkps-{label}-{uuid.uuid4().hex[:12]}"


def participant_token(minter: TokenMinter, room: str, identity: str) -> str:
    """A participant token exactly as LKPS issues one for a session with AGENT_NAME."""
    config = dispatch_room_config(AGENT_NAME, DISPATCH_METADATA, max_participants=2)
    issued = minter.participant_token(
        identity=identity, name=identity.title(), room=room, room_config=config, ttl=TTL
    )
    return issued.jwt


def agent_token(minter: TokenMinter) -> str:
    return minter.agent_token(agent_name=AGENT_NAME, ttl=TTL).jwt


@asynccontextmanager
async def joined(url: str, token: str) -> AsyncIterator[rtc.Room]:
    """A room connected with `token`, disconnected afterwards."""
    room = rtc.Room()
    await asyncio.wait_for(room.connect(url, token), STEP_TIMEOUT)
    try:
        yield room
    finally:
        await asyncio.wait_for(room.disconnect(), STEP_TIMEOUT)


async def refused(url: str, token: str) -> str:
    """The SDK's error when connecting with `token`; fails the test if it connects."""
    room = rtc.Room()
    try:
        await asyncio.wait_for(room.connect(url, token), STEP_TIMEOUT)
    except rtc.ConnectError as error:
        return str(error.message)
    await asyncio.wait_for(room.disconnect(), STEP_TIMEOUT)
    pytest.fail(f"connected to {room.name!r} as {room.local_participant.identity!r}")


@asynccontextmanager
async def server_api(server: RealLiveKit) -> AsyncIterator[api.LiveKitAPI]:
    timeout = aiohttp.ClientTimeout(total=STEP_TIMEOUT)
    async with api.LiveKitAPI(
        server.http_url, server.api_key, server.api_secret, timeout=timeout
    ) as lk:
        yield lk


async def participant_identities(lk: api.LiveKitAPI, room: str) -> set[str]:
    listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    return {participant.identity for participant in listed.participants}


async def agent_socket_status(server: RealLiveKit, token: str) -> int:
    """The HTTP status of opening LiveKit's `/agent` worker WebSocket with `token`."""
    timeout = aiohttp.ClientTimeout(total=STEP_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            async with http.ws_connect(
                f"{server.url}/agent", headers={"Authorization": f"Bearer {token}"}
            ) as socket:
                await asyncio.wait_for(socket.close(), STEP_TIMEOUT)
                return 101
        except aiohttp.WSServerHandshakeError as error:
            return error.status


async def test_participant_token_joins_and_creates_the_room_from_its_config(
    livekit_server: RealLiveKit, minter: TokenMinter
) -> None:
    name = room_name("join")
    async with joined(livekit_server.url, participant_token(minter, name, "alice")) as room:
        assert room.name == name
        assert room.local_participant.identity == "alice"
        assert room.connection_state == rtc.ConnectionState.CONN_CONNECTED

        async with server_api(livekit_server) as lk:
            listed = await lk.room.list_rooms(api.ListRoomsRequest(names=[name]))
            assert [created.name for created in listed.rooms] == [name]
            created = listed.rooms[0]
            assert created.max_participants == 2
            assert created.departure_timeout == DEPARTURE_TIMEOUT_SECONDS
            dispatches = await lk.agent_dispatch.list_dispatch(name)
            assert [(d.agent_name, d.metadata) for d in dispatches] == [
                (AGENT_NAME, DISPATCH_METADATA)
            ]
            assert await participant_identities(lk, name) == {"alice"}


async def test_the_rooms_max_participants_turns_a_third_participant_away(
    livekit_server: RealLiveKit, minter: TokenMinter
) -> None:
    name = room_name("full")
    url = livekit_server.url
    async with (
        joined(url, participant_token(minter, name, "alice")),
        joined(url, participant_token(minter, name, "bob")),
    ):
        await refused(url, participant_token(minter, name, "carol"))
        async with server_api(livekit_server) as lk:
            assert await participant_identities(lk, name) == {"alice", "bob"}


async def test_agent_only_token_cannot_join_a_room(
    livekit_server: RealLiveKit, minter: TokenMinter
) -> None:
    error = await refused(livekit_server.url, agent_token(minter))
    assert "401" in error


async def test_participant_token_cannot_open_the_agent_worker_socket(
    livekit_server: RealLiveKit, minter: TokenMinter
) -> None:
    token = participant_token(minter, room_name("worker"), "alice")
    assert await agent_socket_status(livekit_server, token) == 401


async def test_agent_token_opens_the_agent_worker_socket(
    livekit_server: RealLiveKit, minter: TokenMinter
) -> None:
    """The control for the test above: the endpoint itself accepts LKPS's agent token."""
    assert await agent_socket_status(livekit_server, agent_token(minter)) == 101


async def test_token_for_room_a_cannot_join_room_b(
    livekit_server: RealLiveKit, minter: TokenMinter
) -> None:
    """The room is the token's: asking for room B (open, with bob in it) with room A's
    token (the SDK takes no room name, so in the URL) lands in room A, never in B."""
    url = livekit_server.url
    room_a, room_b = room_name("a"), room_name("b")
    async with (
        joined(url, participant_token(minter, room_b, "bob")),
        joined(f"{url}?room={room_b}", participant_token(minter, room_a, "alice")) as room,
    ):
        assert room.name == room_a
        assert room.remote_participants == {}
        async with server_api(livekit_server) as lk:
            assert await participant_identities(lk, room_b) == {"bob"}
            assert await participant_identities(lk, room_a) == {"alice"}
