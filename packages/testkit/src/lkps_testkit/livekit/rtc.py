"""The signalling endpoints `/rtc` and `/rtc/v1`, up to the join and no further.

A job process of livekit-agents, or any `livekit.rtc.Room`, connects here with the
participant token (`Authorization: Bearer` or `access_token`; v1 clients also send a
base64 `join_request`). The double checks the token exactly as LiveKit does, so a bad
one is refused with 401 before the upgrade, joins the participant to the room
(creating it from the token's `roomConfig` if needed), and records the join.

It does not do WebRTC. After the upgrade it sends a `SignalResponse` carrying `leave`
(reason JOIN_FAILURE, no reconnect) and closes the socket, and the participant leaves
the room again. The client sees a failed connection: the Rust SDK retries three times
(so three or four joins are recorded) and `Room.connect` raises `ConnectError`. Tests
assert on the recorded joins, never on a working room.

`/rtc/validate` and `/rtc/v1/validate` answer what the join would, without joining:
the Rust SDK calls them after a refused upgrade to read LiveKit's reason.
"""

from __future__ import annotations

import base64
import binascii
import gzip
from dataclasses import dataclass, field

from aiohttp import web
from google.protobuf.message import DecodeError
from livekit.protocol import models
from livekit.protocol import rtc as rtc_pb

from lkps_testkit.livekit.engine import Engine
from lkps_testkit.livekit.errors import HttpRefusal, ServiceError
from lkps_testkit.livekit.tokens import NO_ROOM_PERMISSION, VerifiedToken, join_target

CLOSE_TIMEOUT = 2.0


@dataclass(frozen=True)
class JoinParameters:
    metadata: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    sdk: str = ""


def join_parameters(request: web.Request, *, v1: bool) -> JoinParameters:
    """What the client sends besides its token (LiveKit's `validateInternal`)."""
    wrapped = request.query.get("join_request", "")
    if not wrapped:
        if v1:
            raise HttpRefusal(400, "join_request is required")
        return JoinParameters(sdk=request.query.get("sdk", ""))
    try:
        envelope = rtc_pb.WrappedJoinRequest.FromString(base64.urlsafe_b64decode(wrapped))
        payload = envelope.join_request
        if envelope.compression == rtc_pb.WrappedJoinRequest.GZIP:
            payload = gzip.decompress(payload)
        join = rtc_pb.JoinRequest.FromString(payload)
    except (binascii.Error, ValueError, DecodeError, OSError):
        raise HttpRefusal(400, "cannot unmarshal wrapped join request") from None
    sdk = models.ClientInfo.SDK.Name(join.client_info.sdk) if join.HasField("client_info") else ""
    return JoinParameters(join.metadata, dict(join.participant_attributes), sdk)


def _check(token: VerifiedToken | None, parameters: JoinParameters) -> VerifiedToken:
    if token is None:
        raise HttpRefusal(401, NO_ROOM_PERMISSION)
    if (parameters.metadata or parameters.attributes) and not token.grant("canUpdateOwnMetadata"):
        # Setting one's own metadata at join needs the grant, as any later update would.
        raise HttpRefusal(401, NO_ROOM_PERMISSION)
    return token


async def validate(request: web.Request, token: VerifiedToken | None, *, v1: bool) -> web.Response:
    try:
        join_target(_check(token, join_parameters(request, v1=v1)), request.query.get("room"))
    except HttpRefusal as refusal:
        return web.Response(status=refusal.status, text=refusal.message)
    return web.Response(text="success")


async def signal(
    request: web.Request, token: VerifiedToken | None, engine: Engine, *, v1: bool
) -> web.StreamResponse:
    ws = web.WebSocketResponse(timeout=CLOSE_TIMEOUT)
    try:
        parameters = join_parameters(request, v1=v1)
        verified = _check(token, parameters)
        join_target(verified, request.query.get("room"))
        if not ws.can_prepare(request).ok:
            raise HttpRefusal(400, "websocket upgrade required")
        participant = engine.join_verified(
            verified,
            request.query.get("room"),
            via="rtc",
            metadata=parameters.metadata,
            attributes=parameters.attributes,
            sdk=parameters.sdk,
        )
    except (HttpRefusal, ServiceError) as refusal:
        return web.Response(status=refusal.status, text=refusal.message)
    try:
        await ws.prepare(request)
        leave = rtc_pb.LeaveRequest(
            can_reconnect=False,
            reason=models.DisconnectReason.JOIN_FAILURE,
            action=rtc_pb.LeaveRequest.DISCONNECT,
        )
        await ws.send_bytes(rtc_pb.SignalResponse(leave=leave).SerializeToString())
    finally:
        # Gone before the socket closes, so that a client seeing the close sees it gone.
        engine.rooms.disconnect(participant, "JOIN_FAILURE")
    await ws.close()
    return ws
