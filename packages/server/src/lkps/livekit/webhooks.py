"""LiveKit's webhooks, verified with livekit-api's `WebhookReceiver`: the `Authorization`
header is a JWT LiveKit signed with LKPS's API secret (issuer = the API key), whose
`sha256` claim is the body's digest. Anything else is refused, and so is an event older
than the freshness window: with the token's own expiry (LiveKit signs for 5 minutes)
that bounds how long a captured request can be replayed, and inside the window a
replay changes nothing (every step is applied once, see `lkps.store.sessions`).

The receiver's checks are LiveKit's own and PyJWT's, not LKPS's: a hand-written copy
measured 25-30 µs per event against the receiver's 140-175 µs (bench/RESULTS.md), about
a tenth of a webhook's CPU, and that is not worth owning signature and claim checks.
What LKPS keeps of a verified event is `WebhookFacts`: the few fields it follows.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.json_format import ParseError
from livekit.api import TokenVerifier, WebhookReceiver
from livekit.protocol.models import ParticipantInfo
from livekit.protocol.webhook import WebhookEvent

from lkps.clock import Clock
from lkps.errors import BadRequest, Unauthenticated

# Larger than any event LiveKit sends (a room and a participant with their metadata,
# each bounded by LiveKit), small enough that a flood of bodies costs little to refuse.
MAX_WEBHOOK_BYTES = 256 * 1024
# The events that move a session (`lkps.sessions.lifecycle`); others are verified,
# counted and answered, and nothing more.
FOLLOWED = frozenset({"room_started", "room_finished", "participant_joined"})


@dataclass(frozen=True, slots=True)
class WebhookFacts:
    """What LKPS reads of a verified event: its name, its room, and its participant."""

    event: str
    room_name: str = ""
    room_sid: str = ""
    identity: str = ""
    participant_sid: str = ""
    kind: int = ParticipantInfo.Kind.STANDARD
    created_at: int = 0

    @property
    def agent(self) -> bool:
        return self.kind == ParticipantInfo.Kind.AGENT

    @classmethod
    def of(cls, event: WebhookEvent) -> WebhookFacts:
        return cls(
            event=event.event,
            room_name=event.room.name,
            room_sid=event.room.sid,
            identity=event.participant.identity,
            participant_sid=event.participant.sid,
            kind=event.participant.kind,
            created_at=event.created_at,
        )


class WebhookVerifier:
    def __init__(
        self, api_key: str, api_secret: str, clock: Clock, *, max_age_seconds: float
    ) -> None:
        self._receiver = WebhookReceiver(TokenVerifier(api_key, api_secret))
        self._clock = clock
        self._max_age = max_age_seconds

    def verify(self, body: bytes, authorization: str | None) -> WebhookFacts:
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
            # In seconds, not as a datetime: any int64 is a signed body's to send.
            age = self._clock.now().timestamp() - event.created_at
            if abs(age) > self._max_age:
                raise Unauthenticated(
                    "webhook event outside the freshness window", kind="webhook_stale"
                )
        return WebhookFacts.of(event)
