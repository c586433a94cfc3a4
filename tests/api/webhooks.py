"""Signed LiveKit webhooks for the tests' LKPS (its LiveKit key and secret)."""

from __future__ import annotations

from livekit.protocol.webhook import WebhookEvent

from lkps_testkit.livekit.webhooks import webhook_body, webhook_event, webhook_signature
from tests.conftest import LIVEKIT_KEY, LIVEKIT_SECRET

event = webhook_event
body_of = webhook_body


def signature(body: str, *, key: str = LIVEKIT_KEY, secret: str = LIVEKIT_SECRET) -> str:
    return webhook_signature(body, key=key, secret=secret)


def signed(message: WebhookEvent) -> tuple[str, dict[str, str]]:
    body = body_of(message)
    return body, {"Authorization": signature(body), "Content-Type": "application/webhook+json"}
