"""How short a participant token may live, measured against a real livekit-server.

LiveKit hands every participant that joins a token of its own (`refresh_token`, 10
minutes, the same grants and room configuration) and SDKs reconnect with the newest one,
so LKPS's token only has to last until the client has joined: a resume and a full
reconnect after it expired both succeed, while the expired token itself joins no more.
LiveKit accepts a token up to a minute past its `exp` (go-jose's default leeway), so
"expired" here is more than a minute after it. (Reconnects after 11 minutes were
measured the same way: bench/RESULTS.md.)"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from livekit import api, rtc
from livekit.rtc._proto.room_pb2 import SimulateScenarioKind
from pydantic import SecretStr

from lkps.clock import SystemClock
from lkps.livekit.tokens import TokenMinter, dispatch_room_config
from tests.realserver.conftest import RealLiveKit

pytestmark = pytest.mark.e2e

TTL = 30  # seconds: LKPS_PARTICIPANT_TOKEN_TTL's least value
LIVEKIT_LEEWAY = 60  # seconds LiveKit still accepts a token after its exp
STEP_TIMEOUT = 30.0


async def reconnects(room: rtc.Room, scenario: str, reconnected: asyncio.Event) -> None:
    reconnected.clear()
    await room.simulate_scenario(SimulateScenarioKind.Value(scenario))
    await asyncio.wait_for(reconnected.wait(), STEP_TIMEOUT)
    assert room.connection_state == rtc.ConnectionState.CONN_CONNECTED


async def test_a_short_lived_token_survives_reconnects_after_it_expired(
    livekit_server: RealLiveKit,
) -> None:
    minter = TokenMinter(
        livekit_server.api_key, SecretStr(livekit_server.api_secret), SystemClock()
    )
    name = f"lkps-ttl-{time.monotonic_ns()}"
    token = minter.participant_token(
        identity="alice",
        name="Alice",
        room=name,
        room_config=dispatch_room_config(
            "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "", max_participants=2
        ),
        ttl=timedelta(seconds=TTL),
    )
    room = rtc.Room()
    reconnected = asyncio.Event()
    room.on("reconnected", lambda: reconnected.set())
    await asyncio.wait_for(room.connect(livekit_server.url, token.jwt), STEP_TIMEOUT)
    try:
        expired = token.expires_at.timestamp() + LIVEKIT_LEEWAY + 5
        await asyncio.sleep(max(0.0, expired - time.time()))
        # The connected client reconnects all the same, on LiveKit's refreshed token.
        await reconnects(room, "SIMULATE_SIGNAL_RECONNECT", reconnected)
        await reconnects(room, "SIMULATE_FULL_RECONNECT", reconnected)
        # The control: LKPS's token itself opens nothing any more.
        with pytest.raises(rtc.ConnectError):
            await asyncio.wait_for(rtc.Room().connect(livekit_server.url, token.jwt), STEP_TIMEOUT)
        async with api.LiveKitAPI(
            livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
        ) as lk:
            listed = await lk.room.list_participants(api.ListParticipantsRequest(room=name))
        assert [p.identity for p in listed.participants] == ["alice"]
    finally:
        await asyncio.wait_for(room.disconnect(), STEP_TIMEOUT)
