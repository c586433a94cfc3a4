"""Tokens are checked as the LiveKit server checks them, on every entry point: joins,
`/agent`, `/rtc` and Twirp. Each refusal carries LiveKit's status and message."""

from __future__ import annotations

import base64
import datetime
import time
from typing import Any

import aiohttp
import jwt
import pytest
from livekit import api, rtc
from livekit.protocol import models
from livekit.protocol import room as room_pb
from livekit.protocol import rtc as rtc_pb

from lkps_testkit.livekit import LiveKitDouble, TokenError

pytestmark = pytest.mark.e2e


def sign(livekit: LiveKitDouble, **claims: Any) -> str:
    """A hand-made token: only the claims given, signed with the double's secret."""
    now = int(time.time())
    payload = {"iss": livekit.api_key, "nbf": now, "exp": now + 600, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, livekit.api_secret, algorithm="HS256")


def refusal(livekit: LiveKitDouble, token: str, room: str | None = None) -> TokenError:
    with pytest.raises(TokenError) as caught:
        livekit.join(token, room)
    return caught.value


JOIN = {"roomJoin": True, "room": "demo"}


def test_a_well_formed_token_joins(livekit: LiveKitDouble) -> None:
    participant = livekit.join(sign(livekit, sub="alice", video=JOIN))
    assert (participant.identity, participant.room, participant.kind) == (
        "alice",
        "demo",
        "STANDARD",
    )


def test_a_token_signed_with_another_secret_is_refused(livekit: LiveKitDouble) -> None:
    token = jwt.encode(
        {"iss": livekit.api_key, "sub": "alice", "exp": int(time.time()) + 60, "video": JOIN},
        "not-the-secret-of-this-key-not-at-all",
        algorithm="HS256",
    )
    error = refusal(livekit, token)
    assert error.status == 401
    assert error.message.startswith("invalid authorization token: Signature")


def test_a_token_of_an_unknown_api_key_is_refused(livekit: LiveKitDouble) -> None:
    error = refusal(livekit, sign(livekit, iss="someone-else", sub="alice", video=JOIN))
    assert (error.status, error.message) == (401, "invalid API key")


def test_expiry_allows_livekits_minute_of_leeway_and_no_more(livekit: LiveKitDouble) -> None:
    now = int(time.time())
    recent = sign(livekit, sub="alice", video=JOIN, nbf=now - 100, exp=now - 30)
    assert livekit.join(recent).identity == "alice"
    error = refusal(livekit, sign(livekit, sub="bob", video=JOIN, nbf=now - 300, exp=now - 90))
    assert error.status == 401
    assert "expired" in error.message


def test_a_token_not_yet_valid_is_refused(livekit: LiveKitDouble) -> None:
    now = int(time.time())
    error = refusal(livekit, sign(livekit, sub="alice", video=JOIN, nbf=now + 300))
    assert error.status == 401
    assert "not yet valid" in error.message


def test_a_token_without_exp_is_refused(livekit: LiveKitDouble) -> None:
    error = refusal(livekit, sign(livekit, sub="alice", video=JOIN, exp=None))
    assert error.status == 401
    assert "exp" in error.message


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_only_hs256_is_accepted(algorithm: str) -> None:
    with LiveKitDouble(api_secret="s" * 64) as livekit:  # long enough for HS512
        claims = {"iss": livekit.api_key, "sub": "alice", "exp": int(time.time()) + 60}
        token = jwt.encode({**claims, "video": JOIN}, livekit.api_secret, algorithm=algorithm)
        assert refusal(livekit, token).status == 401


def test_garbage_is_an_invalid_token(livekit: LiveKitDouble) -> None:
    assert (refusal(livekit, "not.a.jwt").status, refusal(livekit, "x").message) == (
        401,
        "invalid authorization token",
    )


@pytest.mark.parametrize(
    ("claims", "status", "message"),
    [
        ({"sub": "alice"}, 401, "no permissions to access the room"),
        ({"sub": "alice", "video": {"room": "demo"}}, 401, "permissions denied"),
        ({"sub": "alice", "video": {"roomJoin": False, "room": "demo"}}, 401, "permissions denied"),
        ({"video": JOIN}, 400, "identity cannot be empty"),
        ({"sub": "alice", "video": {"roomJoin": True}}, 400, "no room name"),
    ],
    ids=["no-video-grant", "no-roomJoin", "roomJoin-false", "no-identity", "no-room"],
)
def test_join_grants(
    livekit: LiveKitDouble, claims: dict[str, Any], status: int, message: str
) -> None:
    error = refusal(livekit, sign(livekit, **claims))
    assert (error.status, error.message) == (status, message)
    assert livekit.rooms() == []


def test_identity_falls_back_to_jti(livekit: LiveKitDouble) -> None:
    assert livekit.join(sign(livekit, jti="from-jti", video=JOIN)).identity == "from-jti"


def test_a_token_for_room_a_never_joins_room_b(livekit: LiveKitDouble) -> None:
    participant = livekit.join(livekit.token("alice", room="room-a"), room="room-b")
    assert participant.room == "room-a"
    assert [r.name for r in livekit.rooms()] == ["room-a"]
    assert livekit.participants("room-b") == []


def test_a_token_without_room_joins_the_room_asked_for(livekit: LiveKitDouble) -> None:
    token = sign(livekit, sub="alice", video={"roomJoin": True})
    assert livekit.join(token, room="lobby").room == "lobby"


def test_a_malformed_room_config_makes_the_token_invalid(livekit: LiveKitDouble) -> None:
    token = sign(livekit, sub="alice", video=JOIN, roomConfig={"maxParticipants": "many"})
    assert refusal(livekit, token).status == 401


# /agent: the upgrade itself is refused.


async def connect_agent(
    livekit: LiveKitDouble, headers: dict[str, str] | None = None, query: str = ""
) -> aiohttp.ClientWebSocketResponse:
    async with aiohttp.ClientSession() as session:
        return await session.ws_connect(f"{livekit.url}/agent{query}", headers=headers)


async def test_agent_socket_needs_the_agent_grant(livekit: LiveKitDouble) -> None:
    token = livekit.token("svc", grants=api.VideoGrants(room_join=True, room="demo"))
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await connect_agent(livekit, {"Authorization": f"Bearer {token}"})
    assert caught.value.status == 401
    assert livekit.workers(connected_only=False) == []


async def test_agent_socket_refuses_a_bad_token_and_a_non_bearer_header(
    livekit: LiveKitDouble,
) -> None:
    wrong = api.AccessToken(livekit.api_key, "a-different-secret-of-decent-length!!")
    bad = wrong.with_grants(api.VideoGrants(agent=True)).to_jwt()
    for headers in ({"Authorization": f"Bearer {bad}"}, {"Authorization": f"Basic {bad}"}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await connect_agent(livekit, headers)
        assert caught.value.status == 401


async def test_agent_socket_accepts_the_access_token_parameter(livekit: LiveKitDouble) -> None:
    token = livekit.token(grants=api.VideoGrants(agent=True))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{livekit.url}/agent?access_token={token}")
        assert not ws.closed
        await ws.close()
    assert len(livekit.workers(connected_only=False)) == 1


async def test_agent_path_without_upgrade_is_not_found(livekit: LiveKitDouble) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{livekit.http_url}/agent") as r:
        assert r.status == 404


# /rtc: checked before the upgrade; after it, the double joins and sends `leave`.


async def test_rtc_refuses_a_bad_token_before_the_upgrade(livekit: LiveKitDouble) -> None:
    token = sign(livekit, sub="alice", video={"room": "demo"})  # no roomJoin
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await session.ws_connect(f"{livekit.url}/rtc?access_token={token}")
        assert caught.value.status == 401
        async with session.get(f"{livekit.http_url}/rtc/validate?access_token={token}") as r:
            assert (r.status, await r.text()) == (401, "permissions denied")
    assert livekit.rooms() == []


async def test_rtc_records_the_join_then_sends_leave(livekit: LiveKitDouble) -> None:
    token = livekit.token("alice", room="demo", kind="agent")
    join = rtc_pb.JoinRequest(client_info=models.ClientInfo(sdk=models.ClientInfo.PYTHON))
    wrapped = rtc_pb.WrappedJoinRequest(join_request=join.SerializeToString())
    query = base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            f"{livekit.url}/rtc/v1?join_request={query}",
            headers={"Authorization": f"Bearer {token}"},
        )
        frame = await ws.receive(timeout=5)
        response = rtc_pb.SignalResponse.FromString(frame.data)
        assert response.WhichOneof("message") == "leave"
        assert not response.leave.can_reconnect
        assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE
    [participant] = livekit.participants("demo", active_only=False)
    assert (participant.identity, participant.kind, participant.via) == ("alice", "AGENT", "rtc")
    assert participant.sdk == "PYTHON"
    assert participant.disconnect_reason == "JOIN_FAILURE"


async def test_rtc_v1_needs_a_join_request(livekit: LiveKitDouble) -> None:
    token = livekit.token("alice", room="demo")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{livekit.http_url}/rtc/v1/validate?access_token={token}") as r:
            assert (r.status, await r.text()) == (400, "join_request is required")
        async with session.get(f"{livekit.http_url}/rtc/validate?access_token={token}") as r:
            assert (r.status, await r.text()) == (200, "success")


async def test_the_rtc_client_sees_livekits_refusal(livekit: LiveKitDouble) -> None:
    expired = livekit.token("alice", room="demo", ttl=datetime.timedelta(minutes=-5))
    room = rtc.Room()
    with pytest.raises(rtc.ConnectError, match="401"):
        await room.connect(livekit.url, expired)
    assert livekit.participants("demo", active_only=False) == []


# Twirp: a bad token never reaches the service.


async def test_twirp_refuses_a_bad_token_in_plain_text(livekit: LiveKitDouble) -> None:
    other = api.LiveKitAPI(livekit.http_url, "unknown-key", livekit.api_secret)
    try:
        with pytest.raises(api.TwirpError) as caught:
            await other.room.list_rooms(room_pb.ListRoomsRequest())
    finally:
        await other.aclose()
    # LiveKit's middleware answers before Twirp runs: no JSON body, so no Twirp code.
    assert (caught.value.status, caught.value.code) == (401, "unknown")
