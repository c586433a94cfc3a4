"""`POST /api/session/token`: LiveKit's standardized token-endpoint body."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from livekit.api import TokenVerifier

from tests.conftest import AGENT, CLIENT_B, LIVEKIT_URL, Lkps

pytestmark = pytest.mark.api


def dispatch(agent: str = AGENT, metadata: str = "", **more: Any) -> dict[str, Any]:
    return {"room_config": {"agents": [{"agent_name": agent, "metadata": metadata}], **more}}


@pytest.fixture
async def present(lkps: Lkps) -> Lkps:
    assert (await lkps.register(AGENT, enforce_client_authz=True)).status_code == 200
    return lkps


async def token_request(lkps: Lkps, body: dict[str, Any], token: str | None = None) -> Any:
    return await lkps.post("/api/session/token", token or lkps.user_token(), body)


async def test_standard_body_gets_201_with_server_url_and_token(
    present: Lkps, livekit_verifier: TokenVerifier
) -> None:
    response = await token_request(present, dispatch(metadata='{"language": "en"}'))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["server_url"] == LIVEKIT_URL
    claims = livekit_verifier.verify(body["participant_token"])
    assert claims.identity == "alice"
    assert claims.video is not None and claims.video.room == body["room_name"]
    config = claims.room_config
    assert config is not None
    assert (config.max_participants, config.sync_streams, config.departure_timeout) == (2, True, 30)
    assert [(a.agent_name, a.metadata) for a in config.agents] == [(AGENT, '{"language":"en"}')]


async def test_token_matches_the_one_session_start_issues(present: Lkps) -> None:
    via_token = (await token_request(present, dispatch(metadata='{"a": 1}'))).json()
    via_start = (await present.start_session(AGENT, metadata={"a": 1})).json()

    def shape(token: str) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
        for varying in ("exp", "nbf"):
            claims.pop(varying)
        claims["video"].pop("room")
        return claims

    assert shape(via_token["participant_token"]) == shape(via_start["participant_token"])


async def test_camel_case_room_config_from_protobuf_json_is_understood(present: Lkps) -> None:
    body = {"roomConfig": None, "room_config": {"agents": [{"agentName": AGENT}]}}
    assert (await token_request(present, body)).status_code == 201


async def test_empty_optional_fields_are_fine(present: Lkps) -> None:
    body = {**dispatch(), "room_name": "", "participant_name": "", "participant_attributes": {}}
    assert (await token_request(present, body)).status_code == 201


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({**dispatch(), "room_name": "my-room"}, '"room_name"'),
        ({**dispatch(), "participant_identity": "admin"}, '"participant_identity"'),
        ({**dispatch(), "participant_name": "Someone"}, '"participant_name"'),
        ({**dispatch(), "participant_metadata": "x"}, '"participant_metadata"'),
        ({**dispatch(), "participant_attributes": {"role": "admin"}}, '"participant_attributes"'),
        (dispatch(max_participants=50), "room_config.max_participants"),
        (dispatch(departure_timeout=3600), "room_config.departure_timeout"),
        (dispatch(empty_timeout=3600), "room_config.empty_timeout"),
        ({"room_config": {"agents": []}}, "exactly one agent"),
        (
            {"room_config": {"agents": [{"agent_name": AGENT}, {"agent_name": AGENT}]}},
            "exactly one agent",
        ),
        ({}, "agent_name"),
        (dispatch(agent="my-agent"), "UUID"),
        (dispatch(agent=""), "agent_name"),
        (dispatch(metadata="plain text"), "JSON object"),
        (dispatch(metadata="[1, 2]"), "JSON object"),
        (dispatch(metadata=json.dumps({f"k{i}": i for i in range(51)})), "51 keys"),
        ({"room_config": {"agents": "nope"}}, "room configuration"),
        ({"room_config": {"no_such_field": 1}}, "room configuration"),
    ],
)
async def test_what_a_client_may_not_choose_is_refused(
    present: Lkps, body: dict[str, Any], fragment: str
) -> None:
    response = await token_request(present, body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["message"]


async def test_same_checks_as_session_start(present: Lkps) -> None:
    assert (await token_request(present, dispatch(), "garbage")).status_code == 401
    denied = await token_request(present, dispatch(), present.user_token(client=CLIENT_B))
    assert denied.status_code == 403
    assert denied.json()["message"] == "You are not authorized to access this agent"
    absent = await token_request(present, dispatch(agent="cccccccc-cccc-4ccc-8ccc-cccccccccccc"))
    assert absent.status_code == 404


async def test_audited_like_session_start(present: Lkps) -> None:
    response = await token_request(present, dispatch())
    assert response.status_code == 201
    record = (await present.audit_records())[-1]
    # The record carries the status the caller saw.
    assert (record.event, record.outcome, record.status) == ("session.start", "granted", 201)
    assert record.room_name == response.json()["room_name"]
    assert record.as_json()["details"]["via"] == "token"
