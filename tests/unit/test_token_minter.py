"""The minter's tokens are those livekit-api's `AccessToken.to_jwt` writes, byte for byte."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from livekit.api import AccessToken, VideoGrants
from pydantic import SecretStr

from lkps.clock import SystemClock
from lkps.config import Settings
from lkps.livekit import TokenMinter, dispatch_room_config

pytestmark = pytest.mark.unit

KEY, SECRET = "APIminter", "s" * 48
TTL = timedelta(seconds=900)


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded  # in the token's key order, nested objects too


def _reference_participant(name: str | None) -> str:
    config = dispatch_room_config("agent-a", '{"topic":"billing"}', max_participants=2)
    grants = VideoGrants(
        room_join=True, room="room_1", can_publish=True, can_subscribe=True, can_publish_data=True
    )
    token = (
        AccessToken(KEY, SECRET)
        .with_ttl(TTL)
        .with_identity("user_1")
        .with_grants(grants)
        .with_room_config(config)
    )
    if name:
        token = token.with_name(name)
    return token.to_jwt()


def _same(ours: str, reference: str) -> None:
    """Byte for byte, but for the second `nbf` and `exp` fell in: re-signed with the
    reference's times, our claims (in our order) give the reference token."""
    claims, times = _claims(ours), _claims(reference)
    assert claims["exp"] - claims["nbf"] == TTL.total_seconds()
    claims["nbf"], claims["exp"] = times["nbf"], times["exp"]
    assert jwt.encode(claims, SECRET, algorithm="HS256") == reference
    assert ours.split(".")[0] == reference.split(".")[0]
    jwt.decode(ours, SECRET, algorithms=["HS256"], options={"verify_nbf": False})


@pytest.mark.parametrize("name", ["User One", None, ""])
def test_participant_token_matches_livekit(name: str | None) -> None:
    minter = TokenMinter(KEY, SecretStr(SECRET), SystemClock())
    issued = minter.participant_token(
        identity="user_1",
        name=name,
        room="room_1",
        room_config=dispatch_room_config("agent-a", '{"topic":"billing"}', max_participants=2),
        ttl=TTL,
    )
    _same(issued.jwt, _reference_participant(name))


def test_agent_token_matches_livekit() -> None:
    minter = TokenMinter(KEY, SecretStr(SECRET), SystemClock())
    grants = VideoGrants(agent=True, can_publish=False, can_subscribe=False, can_publish_data=False)
    reference = (
        AccessToken(KEY, SECRET)
        .with_ttl(TTL)
        .with_identity("agent-a")
        .with_kind("agent")
        .with_grants(grants)
        .to_jwt()
    )
    _same(minter.agent_token(agent_name="agent-a", ttl=TTL).jwt, reference)


def test_missing_room_or_identity_is_refused_as_livekit_does() -> None:
    minter = TokenMinter(KEY, SecretStr(SECRET), SystemClock())
    config = dispatch_room_config("agent-a", "{}", max_participants=2)
    for identity, room in (("", "room_1"), ("user_1", "")):
        with pytest.raises(ValueError, match="identity and room must be set"):
            minter.participant_token(
                identity=identity, name=None, room=room, room_config=config, ttl=TTL
            )


ENV_KEY, ENV_SECRET = "APIfromenvironment", "e" * 48


@pytest.fixture
def livekit_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """LiveKit's own variables, as a machine that also runs LiveKit tools may have them."""
    monkeypatch.setenv("LIVEKIT_URL", "wss://livekit.from-the-environment.example")
    monkeypatch.setenv("LIVEKIT_API_KEY", ENV_KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", ENV_SECRET)


@pytest.mark.usefixtures("livekit_environment")
def test_tokens_use_the_configured_key_not_livekits_variables() -> None:
    minter = TokenMinter(KEY, SecretStr(SECRET), SystemClock())
    for token in (
        minter.agent_token(agent_name="agent-a", ttl=TTL).jwt,
        minter.participant_token(
            identity="user_1",
            name=None,
            room="room_1",
            room_config=dispatch_room_config("agent-a", "{}", max_participants=2),
            ttl=TTL,
        ).jwt,
    ):
        assert jwt.decode(token, SECRET, algorithms=["HS256"], issuer=KEY)
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(token, ENV_SECRET, algorithms=["HS256"])


@pytest.mark.usefixtures("livekit_environment")
@pytest.mark.parametrize(("key", "secret"), [(KEY, ""), ("", SECRET), ("", "")])
def test_missing_key_or_secret_is_refused_not_read_from_livekits_variables(
    key: str, secret: str
) -> None:
    minter = TokenMinter(key, SecretStr(secret), SystemClock())
    with pytest.raises(ValueError, match="api_key and api_secret must be set"):
        minter.agent_token(agent_name="agent-a", ttl=TTL)


class _FixedClock:
    """A wall clock years away from the real one, so a token stamped from any other
    clock cannot pass for one stamped from this."""

    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return 0.0


@pytest.mark.parametrize("kind", ["participant", "agent"])
def test_times_come_from_the_injected_clock(kind: str) -> None:
    now = datetime(2041, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)
    minter = TokenMinter(KEY, SecretStr(SECRET), _FixedClock(now))
    if kind == "agent":
        issued = minter.agent_token(agent_name="agent-a", ttl=TTL)
    else:
        config = dispatch_room_config("agent-a", "{}", max_participants=2)
        issued = minter.participant_token(
            identity="user_1", name=None, room="room_1", room_config=config, ttl=TTL
        )
    claims = _claims(issued.jwt)
    assert issued.expires_at == now + TTL
    assert claims["nbf"] == int(now.timestamp())
    assert claims["exp"] == int(issued.expires_at.timestamp())


def test_no_repr_or_str_shows_the_secret() -> None:
    """Not the minter, not its signer (made by the first token), not the settings."""
    secret = "a-distinctive-livekit-secret-0123456789"
    minter = TokenMinter(KEY, SecretStr(secret), SystemClock())
    minter.agent_token(agent_name="agent-a", ttl=TTL)
    signer = minter._signer
    assert signer is not None
    holders: list[object] = [
        minter,
        signer,
        vars(minter),
        Settings(livekit_api_key=KEY, livekit_api_secret=SecretStr(secret)),
    ]
    for holder in holders:
        assert secret not in repr(holder)
        assert secret not in str(holder)
