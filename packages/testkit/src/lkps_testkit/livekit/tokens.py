"""LiveKit access tokens, checked the way the LiveKit server checks them.

The server (livekit-server `pkg/service/auth.go`, livekit/protocol `auth/verifier.go`)
reads the API key from `iss` without trusting the token, looks its secret up, then
verifies an HS256 signature with one minute of leeway on `exp`/`nbf`, and insists on
`exp`. It never checks `aud` or `iat`. Every failure is a 401 whose body is a short
plain-text reason (not a Twirp JSON error: the middleware answers before Twirp runs).
The participant identity is `sub`, or `jti` when `sub` is empty.

The grant checks that follow (join, Twirp permissions) are the server's too; the
messages are LiveKit's, so a test can match on them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from google.protobuf.json_format import ParseDict, ParseError
from livekit.protocol import models
from livekit.protocol import room as room_pb

from lkps_testkit.livekit.errors import HttpRefusal

LEEWAY_SECONDS = 60.0
JOB_TOKEN_TTL_SECONDS = 3600
BEARER_PREFIX = "Bearer "

# LiveKit's error texts (livekit-server pkg/service/auth.go, errors.go, pkg/rtc/errors.go).
INVALID_TOKEN = "invalid authorization token"
INVALID_API_KEY = "invalid API key"
MISSING_BEARER = "invalid authorization header. Must start with Bearer "
PERMISSION_DENIED = "permissions denied"
NO_ROOM_PERMISSION = "no permissions to access the room"
IDENTITY_EMPTY = "identity cannot be empty"
NO_ROOM_NAME = "no room name"

_KINDS = {
    "": models.ParticipantInfo.STANDARD,
    "standard": models.ParticipantInfo.STANDARD,
    "ingress": models.ParticipantInfo.INGRESS,
    "egress": models.ParticipantInfo.EGRESS,
    "sip": models.ParticipantInfo.SIP,
    "agent": models.ParticipantInfo.AGENT,
    "connector": models.ParticipantInfo.CONNECTOR,
    "bridge": models.ParticipantInfo.BRIDGE,
}


class TokenError(HttpRefusal):
    """A token LiveKit would refuse, with the HTTP status and text LiveKit answers."""


@dataclass(frozen=True)
class VerifiedToken:
    """A token whose signature, key and lifetime have been checked; grants not yet."""

    api_key: str
    identity: str
    claims: Mapping[str, Any]
    fingerprint: str  # a short hash, so tests can tell two tokens apart without keeping them

    @property
    def video(self) -> Mapping[str, Any] | None:
        video = self.claims.get("video")
        return video if isinstance(video, Mapping) else None

    def grant(self, name: str) -> bool:
        """A boolean video grant (`roomJoin`, `roomAdmin`, `agent`, ...)."""
        return bool(self.video and self.video.get(name) is True)

    @property
    def room(self) -> str:
        return str(self.video.get("room", "")) if self.video else ""

    @property
    def kind(self) -> str:
        return str(self.claims.get("kind", ""))

    @property
    def participant_kind(self) -> int:
        """The `ParticipantInfo.Kind`; a kind this double does not know is STANDARD."""
        return _KINDS.get(self.kind, models.ParticipantInfo.STANDARD)

    @property
    def is_dependent(self) -> bool:
        """Agents and recorders: LiveKit neither counts them toward `max_participants`
        nor lets them keep an otherwise empty room open (`ParticipantImpl.IsDependent`)."""
        if self.participant_kind in (models.ParticipantInfo.AGENT, models.ParticipantInfo.EGRESS):
            return True
        return self.grant("agent") or self.grant("recorder")

    @property
    def expires_at(self) -> float:
        return float(self.claims["exp"])

    def room_config(self) -> room_pb.RoomConfiguration | None:
        raw = self.claims.get("roomConfig")
        if not raw:
            return None
        return ParseDict(raw, room_pb.RoomConfiguration(), ignore_unknown_fields=True)


class KeyRing:
    """The API keys the double accepts, each with its secret (LiveKit's key provider)."""

    def __init__(self, keys: Mapping[str, str], *, leeway: float = LEEWAY_SECONDS) -> None:
        if not keys:
            raise ValueError("at least one API key is required")
        self._keys = dict(keys)
        self.leeway = leeway

    def secret_for(self, api_key: str) -> str | None:
        return self._keys.get(api_key)

    def verify(self, raw: str) -> VerifiedToken:
        try:
            if jwt.get_unverified_header(raw).get("alg") != "HS256":
                raise TokenError(401, INVALID_TOKEN)
            unverified = jwt.decode(raw, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenError(401, INVALID_TOKEN) from None
        api_key = unverified.get("iss")
        secret = self.secret_for(api_key) if isinstance(api_key, str) else None
        if secret is None:
            raise TokenError(401, INVALID_API_KEY)
        try:
            claims: dict[str, Any] = jwt.decode(
                raw,
                secret,
                algorithms=["HS256"],
                issuer=api_key,
                leeway=self.leeway,
                options={"require": ["exp"], "verify_aud": False, "verify_iat": False},
            )
        except jwt.PyJWTError as error:
            raise TokenError(401, f"{INVALID_TOKEN}: {error}") from None
        token = VerifiedToken(
            api_key=str(api_key),
            identity=str(claims.get("sub") or claims.get("jti") or ""),
            claims=claims,
            fingerprint=hashlib.sha256(raw.encode()).hexdigest()[:16],
        )
        try:
            token.room_config()
        except ParseError:
            # The server fails to unmarshal the claims: the token as a whole is invalid.
            raise TokenError(401, f"{INVALID_TOKEN}: bad roomConfig") from None
        return token


def bearer_token(authorization: str | None, access_token: str | None) -> str | None:
    """The raw token of a request: the Authorization header, else `access_token`.

    A header that is present but not `Bearer ...` is refused, as LiveKit does."""
    if authorization:
        if not authorization.startswith(BEARER_PREFIX):
            raise TokenError(401, MISSING_BEARER)
        return authorization[len(BEARER_PREFIX) :]
    return access_token or None


def join_target(token: VerifiedToken, requested_room: str | None = None) -> str:
    """The room a token may join, or LiveKit's refusal (`ValidateConnectRequest`).

    The token's room wins over any room the client asks for: a token for room A
    never puts anyone in room B."""
    if token.video is None:
        raise TokenError(401, NO_ROOM_PERMISSION)
    if not token.grant("roomJoin"):
        raise TokenError(401, PERMISSION_DENIED)
    if not token.identity:
        raise TokenError(400, IDENTITY_EMPTY)
    room = token.room or (requested_room or "")
    if not room:
        raise TokenError(400, NO_ROOM_NAME)
    return room


def can_create_rooms(token: VerifiedToken | None) -> bool:
    return token is not None and token.grant("roomCreate")


def can_list_rooms(token: VerifiedToken | None) -> bool:
    return token is not None and token.grant("roomList")


def can_admin_room(token: VerifiedToken | None, room: str) -> bool:
    """`roomAdmin` for exactly this room: LiveKit has no wildcard admin grant."""
    return token is not None and token.grant("roomAdmin") and token.room == room


def default_permissions() -> models.ParticipantPermission:
    """What LiveKit grants an agent whose worker registered without permissions."""
    return models.ParticipantPermission(
        can_subscribe=True, can_publish=True, can_publish_data=True, can_update_metadata=True
    )


def mint_job_token(
    *,
    api_key: str,
    api_secret: str,
    room: str,
    identity: str,
    name: str,
    metadata: str,
    attributes: Mapping[str, str],
    permissions: models.ParticipantPermission,
    now: float | None = None,
) -> str:
    """The token LiveKit hands a worker with a job (livekit/protocol `BuildAgentToken`):
    an `agent` participant of the room, valid for an hour, signed with the key the
    worker connected with. Empty claims are left out, as Go's `omitempty` does."""
    issued = int(time.time() if now is None else now)
    # The can* grants are pointers in Go (sent even when false); `hidden` is omitempty.
    video: dict[str, Any] = {
        "roomJoin": True,
        "agent": True,
        "room": room,
        "canSubscribe": permissions.can_subscribe,
        "canPublish": permissions.can_publish,
        "canPublishData": permissions.can_publish_data,
        "canUpdateOwnMetadata": permissions.can_update_metadata,
        "canSubscribeMetrics": permissions.can_subscribe_metrics,
    }
    if permissions.hidden:
        video["hidden"] = True
    claims: dict[str, Any] = {
        "iss": api_key,
        "sub": identity,
        "nbf": issued,
        "exp": issued + JOB_TOKEN_TTL_SECONDS,
        "kind": "agent",
        "video": video,
        "name": name,
        "metadata": metadata,
        "attributes": dict(attributes),
    }
    return jwt.encode({k: v for k, v in claims.items() if v}, api_secret, algorithm="HS256")
