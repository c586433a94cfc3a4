"""`POST /api/session/start`, row by row of the contract's status table."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from livekit.api import TokenVerifier

from lkps.authorization.file import write_authorization_file
from lkps.config import Settings
from lkps_testkit import EntraDouble
from tests.api.util import running_lkps
from tests.conftest import (
    AGENT,
    AGENT_2,
    CLIENT_A,
    CLIENT_B,
    LIVEKIT_KEY,
    LIVEKIT_URL,
    LKPS_CLIENT_ID,
    FakeClock,
    Lkps,
)

pytestmark = pytest.mark.api

ROOM_NAME = re.compile(
    r"^(?P<cwid>[A-Za-z0-9_.]+)-(?P<agent>[0-9a-f-]{36})-(?P<ts>\d+)-(?P<hex>[0-9a-f]{8,})$"
)


def assert_error(
    response: httpx.Response, status: int, message: str | None = None
) -> dict[str, str]:
    assert response.status_code == status, response.text
    body: dict[str, str] = response.json()
    assert set(body) >= {"error", "message", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
    if message is not None:
        assert body["message"] == message
    return body


@pytest.fixture
async def present(lkps: Lkps) -> Lkps:
    """AGENT registered, enforcing client authorization."""
    assert (await lkps.register(AGENT, enforce_client_authz=True)).status_code == 200
    return lkps


# 200


async def test_granted_session_has_the_contract_fields(present: Lkps) -> None:
    response = await present.start_session(AGENT, metadata={"language": "en"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["livekit_url"] == LIVEKIT_URL
    assert ROOM_NAME.match(body["room_name"])
    assert body["participant_token"].count(".") == 2
    uuid.UUID(body["session_id"])
    assert "expires_at" in body


async def test_room_name_follows_the_contract(present: Lkps, clock: FakeClock) -> None:
    upper_agent = AGENT.upper()
    response = await present.start_session(upper_agent, token=present.user_token("Jane.Doe-Smith"))
    match = ROOM_NAME.match(response.json()["room_name"])
    assert match is not None
    assert match["cwid"] == "Jane.Doe_Smith"  # '-' is not in [A-Za-z0-9_.]
    assert match["agent"] == AGENT  # lower-case canonical even when sent upper-case
    assert int(match["ts"]) == int(clock.now().timestamp())
    assert len(match["hex"]) >= 8


async def test_participant_token_grants_exactly_what_the_contract_lists(
    present: Lkps, livekit_verifier: TokenVerifier
) -> None:
    response = await present.start_session(
        AGENT, token=present.user_token("alice", name="Alice Doe")
    )
    body = response.json()
    claims = livekit_verifier.verify(body["participant_token"])
    assert claims.identity == "alice"
    assert claims.name == "Alice Doe"
    video = claims.video
    assert video is not None
    assert video.room_join is True
    assert video.room == body["room_name"]
    assert (video.can_publish, video.can_subscribe, video.can_publish_data) == (True, True, True)
    for forbidden in ("room_create", "room_admin", "room_list", "room_record", "agent"):
        assert not getattr(video, forbidden), forbidden
    raw = _payload(body["participant_token"])
    assert raw["iss"] == LIVEKIT_KEY
    assert set(raw["video"]) == {"roomJoin", "room", "canPublish", "canSubscribe", "canPublishData"}
    assert raw["exp"] - raw["nbf"] == 900


async def test_room_configuration_dispatches_the_agent(
    present: Lkps, livekit_verifier: TokenVerifier
) -> None:
    metadata = {"language": "en", "nested": {"ü": [1, 2.5, None, True]}, "z": "last", "a": "first"}
    response = await present.start_session(AGENT, metadata=metadata)
    config = livekit_verifier.verify(response.json()["participant_token"]).room_config
    assert config is not None
    assert config.max_participants == 2
    assert config.sync_streams is True
    assert config.departure_timeout == 30
    assert [agent.agent_name for agent in config.agents] == [AGENT]
    # Exactly as sent: compact UTF-8 JSON, keys in the client's order.
    assert config.agents[0].metadata == json.dumps(
        metadata, separators=(",", ":"), ensure_ascii=False
    )
    assert json.loads(config.agents[0].metadata) == metadata


async def test_without_metadata_the_dispatch_metadata_is_empty(
    present: Lkps, livekit_verifier: TokenVerifier
) -> None:
    response = await present.start_session(AGENT)
    config = livekit_verifier.verify(response.json()["participant_token"]).room_config
    assert config is not None and config.agents[0].metadata == ""


async def test_empty_metadata_object_is_forwarded_as_such(
    present: Lkps, livekit_verifier: TokenVerifier
) -> None:
    response = await present.start_session(AGENT, metadata={})
    config = livekit_verifier.verify(response.json()["participant_token"]).room_config
    assert config is not None and config.agents[0].metadata == "{}"


async def test_max_participants_follows_the_setting(
    settings_values: dict[str, Any], clock: FakeClock, entra: EntraDouble
) -> None:
    settings_values["room_max_participants"] = 1
    async with running_lkps(settings_values, clock, entra) as lkps:
        await lkps.register(AGENT)
        token = (await lkps.start_session(AGENT)).json()["participant_token"]
    assert _payload(token)["roomConfig"]["maxParticipants"] == 1


async def test_v1_user_token_and_app_only_caller_are_served(present: Lkps) -> None:
    v1 = await present.start_session(AGENT, token=present.user_token("bob", version="1.0"))
    assert v1.status_code == 200, v1.text
    assert v1.json()["room_name"].startswith("bob-")
    backend = await present.start_session(AGENT, token=present.app_token(CLIENT_A))
    assert backend.status_code == 200, backend.text
    assert backend.json()["room_name"].startswith(f"{CLIENT_A}-")


async def test_token_for_the_lkps_client_id_audience_is_accepted(present: Lkps) -> None:
    response = await present.start_session(AGENT, token=present.user_token(audience=LKPS_CLIENT_ID))
    assert response.status_code == 200, response.text


async def test_concurrent_starts_never_share_a_room(present: Lkps) -> None:
    responses = await asyncio.gather(*(present.start_session(AGENT) for _ in range(50)))
    rooms = {response.json()["room_name"] for response in responses}
    assert len(rooms) == 50


# 400


async def test_missing_agent_id_uses_the_seed_message(present: Lkps) -> None:
    response = await present.start_session(None, metadata={"a": 1})
    assert_error(response, 400, '"agent_entra_app_id" is required')


@pytest.mark.parametrize("value", ["not-a-uuid", "", 42, None, ["a"], "aaaaaaaa-aaaa-4aaa-8aaa"])
async def test_agent_id_must_be_a_uuid(present: Lkps, value: object) -> None:
    response = await present.post(
        "/api/session/start", present.user_token(), {"agent_entra_app_id": value}
    )
    body = assert_error(response, 400)
    assert "agent_entra_app_id" in body["message"]


@pytest.mark.parametrize("metadata", ["text", 1, ["a", "b"], True])
async def test_metadata_must_be_an_object(present: Lkps, metadata: object) -> None:
    body = assert_error(await present.start_session(AGENT, metadata=metadata), 400)
    assert body["message"] == '"metadata" must be a JSON object'


async def test_fifty_metadata_keys_pass_and_fifty_one_do_not(present: Lkps) -> None:
    fifty = {f"k{i}": i for i in range(50)}
    assert (await present.start_session(AGENT, metadata=fifty)).status_code == 200
    body = assert_error(await present.start_session(AGENT, metadata={**fifty, "k50": 50}), 400)
    assert "51 keys" in body["message"] and "50" in body["message"]


def _metadata_of_size(size: int) -> dict[str, str]:
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    return {"k": "x" * (size - overhead)}


async def test_metadata_of_10240_bytes_passes_and_10241_does_not(present: Lkps) -> None:
    at_limit = _metadata_of_size(10_240)
    assert len(json.dumps(at_limit, separators=(",", ":")).encode()) == 10_240
    assert (await present.start_session(AGENT, metadata=at_limit)).status_code == 200
    body = assert_error(await present.start_session(AGENT, metadata=_metadata_of_size(10_241)), 400)
    assert "10241 bytes" in body["message"]


async def test_metadata_size_counts_utf8_bytes_not_characters(present: Lkps) -> None:
    # 'é' is two bytes in UTF-8: 5,200 of them are 10,400 bytes in 5,200 characters.
    body = assert_error(await present.start_session(AGENT, metadata={"k": "é" * 5200}), 400)
    assert "bytes" in body["message"]


async def test_deeply_nested_metadata_is_refused(present: Lkps) -> None:
    nested: object = "leaf"
    for _ in range(40):
        nested = {"n": nested}
    body = assert_error(await present.start_session(AGENT, metadata=nested), 400)
    assert "nested" in body["message"]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"agent_entra_app_id": ', "not valid JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"agent_entra_app_id": "' + AGENT.encode() + b'", "metadata": {"x": NaN}}', "NaN"),
        (b'{"metadata": {"n": ' + b"9" * 5000 + b"}}", "more than 4300 digits"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b'["a list"]', "must be a JSON object"),
        (b'"a string"', "must be a JSON object"),
        (b"   ", "required"),
    ],
    ids=[
        "truncated",
        "invalid-utf8",
        "nan",
        "huge-integer",
        "deep-array",
        "list",
        "string",
        "blank",
    ],
)
async def test_malformed_bodies_get_400(present: Lkps, raw: bytes, fragment: str) -> None:
    response = await present.http.post(
        "/api/session/start",
        content=raw,
        headers={
            "Authorization": f"Bearer {present.user_token()}",
            "Content-Type": "application/json",
        },
    )
    body = assert_error(response, 400)
    assert fragment in body["message"]


async def test_non_json_content_type_gets_415(present: Lkps) -> None:
    response = await present.http.post(
        "/api/session/start",
        content=b"agent_entra_app_id=" + AGENT.encode(),
        headers={
            "Authorization": f"Bearer {present.user_token()}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert_error(response, 415)


async def test_body_over_64_kib_gets_413(present: Lkps) -> None:
    big = {"agent_entra_app_id": AGENT, "pad": "x" * 70_000}
    assert_error(await present.post("/api/session/start", present.user_token(), big), 413)


async def test_body_over_64_kib_without_content_length_gets_413(present: Lkps) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b" " * 1024

    response = await present.http.post(
        "/api/session/start",
        content=chunks(),
        headers={
            "Authorization": f"Bearer {present.user_token()}",
            "Content-Type": "application/json",
        },
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413)


# 401 before anything else


async def test_bad_token_is_401_even_with_a_bad_body(present: Lkps) -> None:
    response = await present.post("/api/session/start", "garbage", {"nonsense": True})
    assert_error(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


# 403


async def test_client_not_pre_authorized_gets_the_seed_message(present: Lkps) -> None:
    response = await present.start_session(AGENT, token=present.user_token(client=CLIENT_B))
    assert_error(response, 403, "You are not authorized to access this agent")


async def test_agent_unknown_to_the_source_is_403_when_enforcing(lkps: Lkps) -> None:
    unknown = str(uuid.uuid4())
    await lkps.register(unknown, enforce_client_authz=True)
    response = await lkps.start_session(unknown)
    assert_error(response, 403, "You are not authorized to access this agent")


async def test_agent_that_does_not_enforce_admits_any_client(lkps: Lkps) -> None:
    await lkps.register(AGENT_2, enforce_client_authz=False)
    response = await lkps.start_session(AGENT_2, token=lkps.user_token(client=CLIENT_B))
    assert response.status_code == 200, response.text


async def test_enforcement_defaults_to_the_setting(lkps: Lkps) -> None:
    await lkps.register(AGENT_2)  # no enforce_client_authz: LKPS_DEFAULT_ENFORCE_CLIENT_AUTHZ=true
    response = await lkps.start_session(AGENT_2, token=lkps.user_token(client=CLIENT_B))
    assert_error(response, 403)


# 404


async def test_unregistered_agent_is_404_with_the_seed_message(lkps: Lkps) -> None:
    response = await lkps.start_session(AGENT)
    assert_error(response, 404, f"Agent with app ID '{AGENT}' is not connected")


# 503


async def test_unreadable_authorization_file_is_503_and_no_token(
    present: Lkps, authz_file: Path
) -> None:
    authz_file.write_text("agents: [this is: not valid")
    response = await present.start_session(AGENT)
    assert_error(response, 503)
    assert response.headers["retry-after"]
    assert "participant_token" not in response.text


async def test_missing_authorization_file_is_503(present: Lkps, authz_file: Path) -> None:
    authz_file.unlink()
    assert_error(await present.start_session(AGENT), 503)


async def test_authorization_file_edits_apply_without_restart(
    present: Lkps, authz_file: Path
) -> None:
    assert (
        await present.start_session(AGENT, token=present.user_token(client=CLIENT_B))
    ).status_code == 403
    write_authorization_file(authz_file, {AGENT: [CLIENT_A, CLIENT_B]})
    assert (
        await present.start_session(AGENT, token=present.user_token(client=CLIENT_B))
    ).status_code == 200


# 500


async def test_unexpected_failure_is_500_with_the_seed_message_and_no_detail(
    settings: Settings, clock: FakeClock, entra: EntraDouble
) -> None:
    class ExplodingSource:
        name = "exploding"

        async def pre_authorized_clients(self, agent_id: str) -> frozenset[str] | None:
            raise RuntimeError("secret internal detail")

        def ready(self) -> bool:
            return True

        async def start(self) -> None:
            pass

        async def aclose(self) -> None:
            pass

    async with running_lkps(settings, clock, entra, authorization_source=ExplodingSource()) as lkps:
        await lkps.register(AGENT)
        response = await lkps.start_session(AGENT)
        body = assert_error(response, 500, "Session creation failed")
        assert "secret internal detail" not in response.text
        assert body["error"] == "internal_error"
        records = await lkps.audit_records()
    assert records[-1].status == 500 and records[-1].outcome == "denied"


def _payload(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims
