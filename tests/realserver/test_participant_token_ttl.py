"""Why a participant token may be short-lived, checked against a real livekit-server.

LiveKit hands every participant that joins a token of its own (`refresh_token`, 10
minutes, the same grants and room configuration) and SDKs reconnect with the newest one,
so LKPS's token only has to last until the client has joined. These tests check each
link of that without waiting for anything to expire: LiveKit sends the refreshed token on
join, with LKPS's grants and room configuration and minutes more to live; it joins the
same room as the same participant, and a client on it resumes and fully reconnects; a
token more than LiveKit's leeway past its `exp` joins no more. How reconnects actually
fare once LKPS's token has expired (40 s, 95 s and 11 minutes after it was minted) is a
measurement, not a test: `bench/participant_token_ttl.py`, figures in bench/RESULTS.md."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import aiohttp
import jwt
import pytest
from livekit import api, rtc
from livekit.protocol import rtc as rtc_pb
from livekit.rtc._proto.room_pb2 import SimulateScenarioKind
from pydantic import SecretStr

from lkps.clock import SystemClock
from lkps.livekit.tokens import IssuedToken, TokenMinter, dispatch_room_config
from tests.realserver.conftest import RealLiveKit

pytestmark = pytest.mark.e2e

TTL = timedelta(seconds=30)  # LKPS_PARTICIPANT_TOKEN_TTL's least value
LIVEKIT_LEEWAY = timedelta(seconds=60)  # LiveKit still accepts a token this long after exp
LIVEKIT_REFRESHED_TTL = timedelta(minutes=10)
STEP_TIMEOUT = 30.0
AGENT = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"


class ShiftedClock(SystemClock):
    """The system's time moved by `shift`: mints a token as if it had been minted then."""

    def __init__(self, shift: timedelta) -> None:
        self._shift = shift

    def now(self) -> datetime:
        return datetime.now(UTC) + self._shift


def mint(livekit: RealLiveKit, room: str, *, shift: timedelta = timedelta(0)) -> IssuedToken:
    """LKPS's participant token for alice in `room`, with the least TTL LKPS allows."""
    minter = TokenMinter(livekit.api_key, SecretStr(livekit.api_secret), ShiftedClock(shift))
    return minter.participant_token(
        identity="alice",
        name="Alice",
        room=room,
        room_config=dispatch_room_config(AGENT, "", max_participants=2),
        ttl=TTL,
    )


async def refreshed_token(livekit: RealLiveKit, token: str) -> str:
    """Joins on the signalling socket as a client does and returns the `refresh_token`
    LiveKit sends, then leaves."""
    query = urlencode({"access_token": token, "protocol": 16, "auto_subscribe": 1})
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{livekit.url}/rtc?{query}") as ws,
    ):
        kinds: list[str | None] = []
        while True:
            frame = await ws.receive(timeout=STEP_TIMEOUT)
            assert frame.type == aiohttp.WSMsgType.BINARY, (frame, kinds)
            response = rtc_pb.SignalResponse.FromString(frame.data)
            kinds.append(response.WhichOneof("message"))
            if response.HasField("refresh_token"):
                leave = rtc_pb.SignalRequest(leave=rtc_pb.LeaveRequest())
                await ws.send_bytes(leave.SerializeToString())
                refreshed: str = response.refresh_token
                return refreshed


async def reconnects(room: rtc.Room, scenario: str, reconnected: asyncio.Event) -> None:
    reconnected.clear()
    await room.simulate_scenario(SimulateScenarioKind.Value(scenario))
    await asyncio.wait_for(reconnected.wait(), STEP_TIMEOUT)
    assert room.connection_state == rtc.ConnectionState.CONN_CONNECTED


async def test_livekit_hands_a_joined_client_a_longer_token_of_its_own(
    livekit_server: RealLiveKit,
) -> None:
    name = f"lkps-ttl-{time.monotonic_ns()}"
    token = mint(livekit_server, name)
    refreshed = await refreshed_token(livekit_server, token.jwt)

    verifier = api.TokenVerifier(livekit_server.api_key, livekit_server.api_secret)
    ours, theirs = verifier.verify(token.jwt), verifier.verify(refreshed)
    assert (theirs.identity, theirs.name, theirs.video, theirs.room_config) == (
        ours.identity,
        ours.name,
        ours.video,
        ours.room_config,
    )
    assert theirs.video is not None and theirs.video.room == name and theirs.video.room_join
    assert theirs.room_config is not None
    assert [a.agent_name for a in theirs.room_config.agents] == [AGENT]
    # Minted at the join, for 10 minutes: it outlives LKPS's 30 s token by minutes,
    # however long the join took.
    claims = jwt.decode(refreshed, options={"verify_signature": False})
    expires = datetime.fromtimestamp(claims["exp"], UTC)
    assert expires - token.expires_at >= LIVEKIT_REFRESHED_TTL - TTL - timedelta(seconds=5)
    assert expires <= datetime.now(UTC) + LIVEKIT_REFRESHED_TTL + timedelta(seconds=5)

    # LiveKit's token is what an SDK reconnects with: it joins the same room as alice,
    # and the client on it resumes and reconnects fully.
    room = rtc.Room()
    reconnected = asyncio.Event()
    room.on("reconnected", lambda: reconnected.set())
    await asyncio.wait_for(room.connect(livekit_server.url, refreshed), STEP_TIMEOUT)
    try:
        assert room.name == name and room.local_participant.identity == "alice"
        await reconnects(room, "SIMULATE_SIGNAL_RECONNECT", reconnected)
        await reconnects(room, "SIMULATE_FULL_RECONNECT", reconnected)
        async with api.LiveKitAPI(
            livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
        ) as lk:
            listed = await lk.room.list_participants(api.ListParticipantsRequest(room=name))
        assert [p.identity for p in listed.participants] == ["alice"]
    finally:
        await asyncio.wait_for(room.disconnect(), STEP_TIMEOUT)


async def test_a_token_past_livekits_leeway_joins_no_more(livekit_server: RealLiveKit) -> None:
    """The control: LKPS's token itself, once more than LiveKit's leeway past its `exp`
    (minted as if that long ago), opens nothing."""
    name = f"lkps-ttl-expired-{time.monotonic_ns()}"
    expired = mint(livekit_server, name, shift=-(TTL + LIVEKIT_LEEWAY + timedelta(seconds=5)))
    with pytest.raises(rtc.ConnectError, match="401"):
        await asyncio.wait_for(rtc.Room().connect(livekit_server.url, expired.jwt), STEP_TIMEOUT)
