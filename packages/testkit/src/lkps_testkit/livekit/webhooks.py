"""LiveKit webhook requests as livekit-server makes them: the body is the event's JSON,
the `Authorization` header a JWT (issuer = API key, HS256 with the API secret) whose
`sha256` claim is the body's digest, valid for 5 minutes. For tests and benchmarks of
what receives them (LKPS's `POST /api/livekit/webhook`)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import datetime, timedelta

from google.protobuf.json_format import MessageToJson
from livekit.api import AccessToken
from livekit.protocol.models import ParticipantInfo, Room
from livekit.protocol.webhook import WebhookEvent

# How long livekit-server's webhook tokens are valid.
WEBHOOK_TOKEN_TTL = timedelta(minutes=5)


def webhook_event(
    kind: str,
    room: str,
    *,
    created: datetime,
    room_sid: str = "RM_original",
    identity: str = "",
    agent: bool = False,
) -> WebhookEvent:
    """An event about `room`; with `identity`, about that participant (an agent's kind
    when `agent`)."""
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


def webhook_body(message: WebhookEvent, *, compact: bool = False) -> str:
    body = MessageToJson(message)
    return json.dumps(json.loads(body), separators=(",", ":")) if compact else body


def webhook_signature(body: str, *, key: str, secret: str) -> str:
    """The `Authorization` header livekit-server sends with `body`."""
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    return AccessToken(key, secret).with_sha256(digest).with_ttl(WEBHOOK_TOKEN_TTL).to_jwt()
