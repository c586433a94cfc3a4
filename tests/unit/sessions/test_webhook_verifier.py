"""The webhook's verifier is livekit-api's receiver with LKPS's refusals around it (401
for any signature or claim problem, 400 for a signed body that is no event, 401 for a
stale event): hostile tokens are built by hand where LiveKit's SDK would not build them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from livekit.api import TokenVerifier, WebhookReceiver
from livekit.protocol.models import ParticipantInfo

from lkps.clock import SystemClock
from lkps.errors import BadRequest, Unauthenticated
from lkps.livekit.webhooks import WebhookVerifier
from lkps_testkit.livekit.webhooks import webhook_body, webhook_event, webhook_signature

pytestmark = pytest.mark.unit

KEY, SECRET = "APIkey", "a-secret-long-enough-for-hs256-and-then-some"


def verifier() -> WebhookVerifier:
    return WebhookVerifier(KEY, SECRET, SystemClock(), max_age_seconds=300)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(
    claims: dict[str, Any], *, header: dict[str, Any] | None = None, secret: str = SECRET
) -> str:
    head = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return f"{head}.{payload}.{b64url(mac)}"


def claims_for(body: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": KEY,
        "exp": now + 300,
        "nbf": now,
        "sha256": base64.b64encode(hashlib.sha256(body.encode()).digest()).decode(),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def fresh_body() -> str:
    """An event created now: built per test, since a module built at import time can run
    its tests minutes later (the suite runs in parallel), past the freshness window."""
    return webhook_body(
        webhook_event(
            "participant_joined",
            "room-1",
            created=datetime.now(UTC),
            identity="agent-AJ_x",
            agent=True,
        )
    )


def test_an_event_signed_as_livekit_signs_it_is_read() -> None:
    body = fresh_body()
    facts = verifier().verify(body.encode(), webhook_signature(body, key=KEY, secret=SECRET))
    assert (facts.event, facts.room_name, facts.room_sid) == (
        "participant_joined",
        "room-1",
        "RM_original",
    )
    assert facts.identity == "agent-AJ_x" and facts.agent
    assert facts.kind == ParticipantInfo.Kind.AGENT


def hostile_tokens(body: str) -> dict[str, str]:
    """Each built at call time: their expiries and not-befores are relative to now."""
    return {
        "alg none": token(claims_for(body), header={"alg": "none"}),
        "HS512": token(claims_for(body), header={"alg": "HS512"}),
        "crit header": token(claims_for(body), header={"alg": "HS256", "crit": ["x"]}),
        "another secret": token(claims_for(body), secret="another-secret-long-enough-for-hs256!!"),
        "another issuer": token(claims_for(body, iss="APIother")),
        "no issuer": token({k: v for k, v in claims_for(body).items() if k != "iss"}),
        "no expiry": token(claims_for(body, exp=None)),
        "expired beyond the leeway": token(claims_for(body, exp=int(time.time()) - 61)),
        "expiry true": token(claims_for(body, exp=True)),
        "not yet valid": token(claims_for(body, nbf=int(time.time()) + 120)),
        "issued in the future": token(claims_for(body, iat=int(time.time()) + 120)),
        "no digest": token(claims_for(body, sha256=None)),
        "digest of another body": token(claims_for(body + " ")),
        "digest not base64": token(claims_for(body, sha256="%%%")),
        "digest not text": token(claims_for(body, sha256=12)),
        "two parts": "a.b",
        "not ascii": "é.é.é",
        "payload not JSON": "e30.bm90IGpzb24.c2ln",
    }


@pytest.mark.parametrize("name", sorted(hostile_tokens("")))
def test_what_livekits_receiver_refuses_is_refused(name: str) -> None:
    body = fresh_body()
    hostile = hostile_tokens(body)[name]
    with pytest.raises(Exception):  # noqa: B017, PT011 (the receiver raises many kinds)
        WebhookReceiver(TokenVerifier(KEY, SECRET)).receive(body, hostile)
    with pytest.raises(Unauthenticated):
        verifier().verify(body.encode(), hostile)


def test_a_token_within_the_leeway_is_accepted_as_by_the_receiver() -> None:
    body = fresh_body()
    late = token(claims_for(body, exp=int(time.time()) - 30))
    WebhookReceiver(TokenVerifier(KEY, SECRET)).receive(body, late)
    assert verifier().verify(body.encode(), late).event == "participant_joined"


@pytest.mark.parametrize(
    "document",
    [
        {"event": 5},
        {"event": "participant_joined", "room": {"name": 1}},
        {"event": "room_started", "createdAt": "soon"},
        {"event": "room_started", "createdAt": 1.5},
        {"event": "room_started", "createdAt": 2**64},
    ],
)
def test_a_signed_body_that_is_no_event_is_a_bad_request(document: Any) -> None:
    body = json.dumps(document)
    with pytest.raises(BadRequest):
        verifier().verify(body.encode(), token(claims_for(body)))


@pytest.mark.parametrize(
    ("document", "room"),
    [
        ([], ""),
        ("text", ""),
        ({"event": "room_finished", "room": "a room"}, ""),
        ({"event": "participant_joined", "room": {"name": "r"}, "participant": {"kind": 9}}, "r"),
    ],
)
def test_what_the_receiver_reads_leniently_names_no_room_it_was_not_given(
    document: Any, room: str
) -> None:
    """The receiver ignores what it does not know (LiveKit adds fields): a signed body of
    another shape is read as the receiver reads it, and names no room of its own making."""
    body = json.dumps(document)
    assert verifier().verify(body.encode(), token(claims_for(body))).room_name == room


def test_events_lkps_does_not_follow_are_verified_and_named() -> None:
    body = webhook_body(webhook_event("track_published", "room-1", created=datetime.now(UTC)))
    facts = verifier().verify(body.encode(), token(claims_for(body)))
    assert facts.event == "track_published"
