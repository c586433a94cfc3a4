"""LiveKit webhook requests as livekit-server signs them: the body is the event's JSON,
the `Authorization` header a JWT (issuer = API key, HS256 with the API secret) whose
`sha256` claim is the body's digest, valid for 5 minutes."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import datetime, timedelta

from google.protobuf.json_format import MessageToJson
from livekit.api import AccessToken
from livekit.protocol.models import ParticipantInfo, Room
from livekit.protocol.webhook import WebhookEvent

from tests.conftest import LIVEKIT_KEY, LIVEKIT_SECRET


def event(
    kind: str,
    room: str,
    *,
    created: datetime,
    room_sid: str = "RM_original",
    identity: str = "",
    agent: bool = False,
) -> WebhookEvent:
    message = WebhookEvent(
        event=kind,
        room=Room(name=room, sid=room_sid),
        id=f"EV_{secrets.token_hex(6)}",
        created_at=int(created.timestamp()),
    )
    if identity:
        message.participant.CopyFrom(
            ParticipantInfo(
                identity=identity,
                sid=f"PA_{secrets.token_hex(4)}",
                kind=ParticipantInfo.Kind.AGENT if agent else ParticipantInfo.Kind.STANDARD,
            )
        )
    return message


def body_of(message: WebhookEvent) -> str:
    return MessageToJson(message)


def signature(body: str, *, key: str = LIVEKIT_KEY, secret: str = LIVEKIT_SECRET) -> str:
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    return AccessToken(key, secret).with_sha256(digest).with_ttl(timedelta(minutes=5)).to_jwt()


def signed(message: WebhookEvent) -> tuple[str, dict[str, str]]:
    body = body_of(message)
    return body, {"Authorization": signature(body), "Content-Type": "application/webhook+json"}
