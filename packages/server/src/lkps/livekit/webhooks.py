"""LiveKit's webhooks, verified with livekit-api's `WebhookReceiver`: the `Authorization`
header is a JWT LiveKit signed with LKPS's API secret (issuer = the API key), whose
`sha256` claim is the body's digest. Anything else is refused, and so is an event older
than the freshness window: with the token's own expiry (LiveKit signs for 5 minutes)
that bounds how long a captured request can be replayed, and inside the window a
replay changes nothing (every step is applied once, see `lkps.store.sessions`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.json_format import ParseError
from livekit.api import TokenVerifier, WebhookReceiver
from livekit.protocol.webhook import WebhookEvent

from lkps.clock import Clock
from lkps.errors import BadRequest, Unauthenticated

# Larger than any event LiveKit sends (a room and a participant with their metadata,
# each bounded by LiveKit), small enough that a flood of bodies costs little to refuse.
MAX_WEBHOOK_BYTES = 256 * 1024


class WebhookVerifier:
    def __init__(
        self, api_key: str, api_secret: str, clock: Clock, *, max_age_seconds: float
    ) -> None:
        self._receiver = WebhookReceiver(TokenVerifier(api_key, api_secret))
        self._clock = clock
        self._max_age = timedelta(seconds=max_age_seconds)

    def verify(self, body: bytes, authorization: str | None) -> WebhookEvent:
        """The event, or `Unauthenticated` (401) for anything not signed by LiveKit with
        this body, or too old; `BadRequest` for a signed body that is no event."""
        if not authorization:
            raise Unauthenticated("webhook without Authorization", kind="webhook_missing")
        token = authorization.removeprefix("Bearer ").strip()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Unauthenticated("webhook body is not UTF-8", kind="webhook_body") from None
        try:
            event = self._receiver.receive(text, token)
        except ParseError:
            raise BadRequest("The webhook body is not a LiveKit event") from None
        except Exception as exc:  # jwt's errors, a hash mismatch, bad base64: all refusals
            raise Unauthenticated(
                f"webhook signature refused: {type(exc).__name__}", kind="webhook_signature"
            ) from None
        if event.created_at:
            created = datetime.fromtimestamp(event.created_at, UTC)
            if abs(self._clock.now() - created) > self._max_age:
                raise Unauthenticated(
                    "webhook event outside the freshness window", kind="webhook_stale"
                )
        return event
