"""LiveKit's webhooks, verified as livekit-api's `WebhookReceiver` verifies them: the
`Authorization` header is a JWT LiveKit signed with LKPS's API secret (HS256, issuer =
the API key, an expiry required, 60 s leeway), whose `sha256` claim is the body's
digest. Anything else is refused, and so is an event older than the freshness window:
with the token's own expiry (LiveKit signs for 5 minutes) that bounds how long a
captured request can be replayed, and inside the window a replay changes nothing
(every step is applied once, see `lkps.store.sessions`).

The same checks as the receiver's, not its code: it cost 140-175 µs of CPU per event
on the benchmark machine (PyJWT keys and validates generically on every call, ~65 µs;
protobuf's pure-Python JSON parser builds the whole event, ~50 µs; the rest around
them), against 25-30 µs here: a sixth of the webhook's whole budget at 2,000 events a
second on two cores (bench/RESULTS.md). Here the HMAC is keyed once, and
the body is read with `json` for the few fields LKPS follows, typed as protobuf's JSON
mapping types them (a signed body of another shape is a 400, as the receiver's parse
error was); events LKPS does not follow are not read beyond their name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from livekit.protocol.models import ParticipantInfo

from lkps.clock import Clock
from lkps.errors import BadRequest, Unauthenticated

# Larger than any event LiveKit sends (a room and a participant with their metadata,
# each bounded by LiveKit), small enough that a flood of bodies costs little to refuse.
MAX_WEBHOOK_BYTES = 256 * 1024
# livekit-api's TokenVerifier's leeway on `exp` and `nbf`.
LEEWAY_SECONDS = 60.0
# The events that move a session (`lkps.sessions.lifecycle`); others are verified,
# counted and answered, and nothing more.
FOLLOWED = frozenset({"room_started", "room_finished", "participant_joined"})
_INT64 = 2**63
_KINDS = {name: number for name, number in ParticipantInfo.Kind.items()}


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


class _Refused(Exception):
    """The signature or its claims are not LiveKit's for this body."""


class _NotAnEvent(Exception):
    """A signed body that is not a LiveKit event's JSON."""


class WebhookVerifier:
    def __init__(
        self, api_key: str, api_secret: str, clock: Clock, *, max_age_seconds: float
    ) -> None:
        self._issuer = api_key
        # The key, once: each event copies this HMAC state instead of keying anew.
        self._mac = hmac.new(api_secret.encode(), digestmod=hashlib.sha256)
        self._clock = clock
        self._max_age = max_age_seconds

    def verify(self, body: bytes, authorization: str | None) -> WebhookFacts:
        """The event, or `Unauthenticated` (401) for anything not signed by LiveKit with
        this body, or too old; `BadRequest` for a signed body that is no event."""
        if not authorization:
            raise Unauthenticated("webhook without Authorization", kind="webhook_missing")
        token = authorization.removeprefix("Bearer ").strip()
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise Unauthenticated("webhook body is not UTF-8", kind="webhook_body") from None
        try:
            self._check(token, body)
        except _Refused as refusal:
            raise Unauthenticated(
                f"webhook signature refused: {refusal}", kind="webhook_signature"
            ) from None
        try:
            facts = _facts(body)
        except _NotAnEvent:
            raise BadRequest("The webhook body is not a LiveKit event") from None
        if facts.created_at:
            # In seconds, not as a datetime: any int64 is a signed body's to send.
            age = self._clock.now().timestamp() - facts.created_at
            if abs(age) > self._max_age:
                raise Unauthenticated(
                    "webhook event outside the freshness window", kind="webhook_stale"
                )
        return facts

    def _check(self, token: str, body: bytes) -> None:
        """HS256 signature with the API secret, then the claims: issuer, expiry (and
        not-before, issued-at when present) against the system's time, as LiveKit signs
        with it, and the body's digest."""
        parts = token.split(".")
        if len(parts) != 3:
            raise _Refused("not a JWT")
        header, payload, signature = parts
        try:
            mac = self._mac.copy()
            mac.update(f"{header}.{payload}".encode("ascii"))
            if not hmac.compare_digest(mac.digest(), _b64url(signature)):
                raise _Refused("signature")
            head = json.loads(_b64url(header))
            claims = json.loads(_b64url(payload))
        except (UnicodeError, binascii.Error, ValueError):
            raise _Refused("not a JWT") from None
        if not isinstance(head, dict) or head.get("alg") != "HS256" or "crit" in head:
            raise _Refused("algorithm")
        if not isinstance(claims, dict) or claims.get("iss") != self._issuer:
            raise _Refused("issuer")
        now = time.time()
        expires = _number(claims.get("exp"))
        if expires is None or now > expires + LEEWAY_SECONDS:
            raise _Refused("expired")
        for name in ("nbf", "iat"):
            if name in claims:
                value = _number(claims[name])
                if value is None or value > now + LEEWAY_SECONDS:
                    raise _Refused(name)
        digest = claims.get("sha256")
        try:
            claimed = base64.b64decode(digest) if isinstance(digest, str) and digest else b""
        except (binascii.Error, ValueError):
            claimed = b""
        if not hmac.compare_digest(claimed, hashlib.sha256(body).digest()):
            raise _Refused("body digest")


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4))


def _number(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (true, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value) if -(2**63) <= value < 2**63 else None
    return number if number == number else None


def _facts(body: bytes) -> WebhookFacts:
    """The fields LKPS follows, each of the type protobuf's JSON mapping gives it (a
    `null` is the field's default); an event LKPS does not follow, by its name alone."""
    try:
        document = json.loads(body)
    except ValueError:
        raise _NotAnEvent from None
    if not isinstance(document, dict):
        raise _NotAnEvent
    event = _text(document, "event")
    created = _int64(document.get("createdAt"))
    if event not in FOLLOWED:
        return WebhookFacts(event=event, created_at=created)
    room = _message(document, "room")
    participant = _message(document, "participant")
    return WebhookFacts(
        event=event,
        room_name=_text(room, "name"),
        room_sid=_text(room, "sid"),
        identity=_text(participant, "identity"),
        participant_sid=_text(participant, "sid"),
        kind=_kind(participant.get("kind")),
        created_at=created,
    )


def _message(document: dict[str, Any], name: str) -> dict[str, Any]:
    value = document.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _NotAnEvent
    return value


def _text(document: dict[str, Any], name: str) -> str:
    value = document.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _NotAnEvent
    return value


def _int64(value: Any) -> int:
    """An int64 in protobuf's JSON: a number without a fraction, or its decimal text."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise _NotAnEvent
    if isinstance(value, str):
        try:
            value = int(value.strip(), 10)
        except ValueError:
            raise _NotAnEvent from None
    elif isinstance(value, float):
        if not value.is_integer():
            raise _NotAnEvent
        value = int(value)
    if not isinstance(value, int) or not -_INT64 <= value < _INT64:
        raise _NotAnEvent
    return value


def _kind(value: Any) -> int:
    """A participant's kind: its enum name or number."""
    if value is None:
        return ParticipantInfo.Kind.STANDARD
    if isinstance(value, str) and value in _KINDS:
        return _KINDS[value]
    if isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31:
        return value
    raise _NotAnEvent
