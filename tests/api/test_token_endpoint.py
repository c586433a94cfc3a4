"""`POST /api/session/token`: LiveKit's standardized token-endpoint body."""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import jwt
import pytest
from livekit.api import TokenVerifier

from lkps.app import create_app
from lkps.config import Settings
from tests.conftest import AGENT, CLIENT_B, LIVEKIT_URL, Lkps

pytestmark = pytest.mark.api


def dispatch(agent: Any = AGENT, metadata: Any = "", **more: Any) -> dict[str, Any]:
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


# Forms a client may send besides the plain one: what LKPS chooses left empty or null,
# keys LiveKit may add at the top level (ignored), an upper-case agent id.
ACCEPTED: dict[str, dict[str, Any]] = {
    "empty strings and attributes": {
        **dispatch(),
        "room_name": "",
        "participant_identity": "",
        "participant_name": "",
        "participant_metadata": "",
        "participant_attributes": {},
    },
    "nulls": {
        **dispatch(),
        "room_name": None,
        "participant_identity": None,
        "participant_name": None,
        "participant_metadata": None,
        "participant_attributes": None,
    },
    "no metadata": {"room_config": {"agents": [{"agent_name": AGENT}]}},
    "null metadata": {"room_config": {"agents": [{"agent_name": AGENT, "metadata": None}]}},
    "upper-case agent id": dispatch(agent=AGENT.upper()),
    "other top-level keys": {**dispatch(), "roomConfig": None, "future_field": {"x": 1}},
}

DISPATCH = "room_config.agents[0]"
CHOSEN = "is chosen by LKPS and cannot be requested"
NOT_AN_APP_ID = f'"{DISPATCH}.agent_name" must be the agent\'s app id (a UUID)'
NOT_AN_OBJECT = f'"{DISPATCH}.metadata" must be a JSON object, as a string'
ONE_AGENT = '"room_config.agents" must name exactly one agent'


def room(**config: Any) -> dict[str, Any]:
    return {"room_config": {"agents": [{"agent_name": AGENT}], **config}}


def agent(**fields: Any) -> dict[str, Any]:
    return {"room_config": {"agents": [fields]}}


# Everything else, each with the message naming what is wrong. The document's schema
# refuses every one of these too (`test_the_document_says_what_is_refused`) ...
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({**dispatch(), "room_name": "my-room"}, f'"room_name" {CHOSEN}'),
    ({**dispatch(), "participant_identity": "admin"}, f'"participant_identity" {CHOSEN}'),
    ({**dispatch(), "participant_name": "Someone"}, f'"participant_name" {CHOSEN}'),
    ({**dispatch(), "participant_metadata": "x"}, f'"participant_metadata" {CHOSEN}'),
    ({**dispatch(), "room_name": 5}, '"room_name" must be a string'),
    (
        {**dispatch(), "participant_attributes": {"role": "admin"}},
        '"participant_attributes" cannot be requested',
    ),
    (
        {**dispatch(), "participant_attributes": {"role": 1}},
        '"participant_attributes.role" must be a string',
    ),
    ({}, '"room_config" is required'),
    ({"room_config": None}, '"room_config" must be a JSON object'),
    ({"room_config": [AGENT]}, '"room_config" must be a JSON object'),
    ({"room_config": {}}, '"room_config.agents" is required'),
    (room(max_participants=50), f'"room_config.max_participants" {CHOSEN}'),
    (room(departure_timeout=3600), f'"room_config.departure_timeout" {CHOSEN}'),
    (room(empty_timeout=3600), f'"room_config.empty_timeout" {CHOSEN}'),
    # Protobuf JSON's default values and camelCase names: not what the SDKs send.
    (room(name=""), f'"room_config.name" {CHOSEN}'),
    (room(emptyTimeout=0), f'"room_config.emptyTimeout" {CHOSEN}'),
    (room(no_such_field=1), f'"room_config.no_such_field" {CHOSEN}'),
    ({"room_config": {"agents": None}}, ONE_AGENT),
    ({"room_config": {"agents": []}}, ONE_AGENT),
    ({"room_config": {"agents": "nope"}}, ONE_AGENT),
    ({"room_config": {"agents": [{"agent_name": AGENT}, {"agent_name": AGENT}]}}, ONE_AGENT),
    ({"room_config": {"agents": [AGENT]}}, f'"{DISPATCH}" must be a JSON object'),
    (agent(), f'"{DISPATCH}.agent_name" is required'),
    (agent(metadata="{}"), f'"{DISPATCH}.agent_name" is required'),
    *(
        (
            agent(agent_name=AGENT, **{key: value}),
            f'"{DISPATCH}.{key}" cannot be requested (a dispatch takes "agent_name" and "metadata")',
        )
        for key, value in (
            ("agentName", AGENT),
            ("deployment", "staging"),
            ("attributes", {"role": "admin"}),
            ("restart_policy", "JRP_NEVER"),
        )
    ),
    *(
        (dispatch(agent=name), NOT_AN_APP_ID)
        for name in (
            "my-agent",
            "",
            None,
            5,
            f"{{{AGENT}}}",
            AGENT.replace("-", ""),
            f"urn:uuid:{AGENT}",
            f"{AGENT}\n",
            f" {AGENT}",
        )
    ),
    (dispatch(metadata=5), NOT_AN_OBJECT),
    (dispatch(metadata={"language": "en"}), NOT_AN_OBJECT),
]

BIG = {"text": "x" * 10_240}

# ... except these: what the metadata string holds. JSON Schema can say that a string
# holds JSON (`contentMediaType`, `contentSchema`) only as an annotation no validator
# enforces, and has no keyword for the size and depth limits.
REFUSED_FOR_THE_METADATA_TEXT: list[tuple[dict[str, Any], str]] = [
    (dispatch(metadata="plain text"), NOT_AN_OBJECT),
    (dispatch(metadata="[1, 2]"), NOT_AN_OBJECT),
    (dispatch(metadata='{"n": NaN}'), NOT_AN_OBJECT),
    (dispatch(metadata='{"a": 1'), NOT_AN_OBJECT),
    (
        dispatch(metadata=json.dumps({f"k{i}": i for i in range(51)})),
        f'"{DISPATCH}.metadata" has 51 keys; at most 50 are allowed',
    ),
    (
        dispatch(metadata='{"a":' * 33 + "1" + "}" * 33),
        f'"{DISPATCH}.metadata" is nested more than 32 levels deep',
    ),
    (
        dispatch(metadata=json.dumps(BIG)),
        f'"{DISPATCH}.metadata" is {len(json.dumps(BIG, separators=(",", ":")))} bytes as '
        "compact JSON; at most 10240 bytes are allowed",
    ),
]


async def test_accepted_forms(
    present: Lkps, livekit_verifier: TokenVerifier, subtests: pytest.Subtests
) -> None:
    for name, body in ACCEPTED.items():
        with subtests.test(name):
            response = await token_request(present, body)
            assert response.status_code == 201, response.text
            claims = livekit_verifier.verify(response.json()["participant_token"])
            assert claims.identity == "alice"
            assert claims.room_config is not None
            dispatched = [(a.agent_name, a.metadata) for a in claims.room_config.agents]
            assert dispatched == [(AGENT, "")]


async def test_what_a_client_may_not_choose_is_refused(
    present: Lkps, subtests: pytest.Subtests
) -> None:
    for body, message in REFUSED + REFUSED_FOR_THE_METADATA_TEXT:
        with subtests.test(message, body=json.dumps(body)[:120]):
            response = await token_request(present, body)
            assert response.status_code == 400, response.text
            assert response.json()["message"] == message


def test_the_document_says_what_is_refused() -> None:
    """The body schema LKPS serves admits every accepted form and none of the refused
    ones, but for the metadata text (as the fuzzer's `_metadata_text` filter says)."""
    document = create_app(Settings.model_construct()).openapi()
    operation = document["paths"]["/api/session/token"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    # Schemathesis's validator, so this test and the fuzzer agree on what the schema says.
    validator = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
    for name, body in ACCEPTED.items():
        assert validator.is_valid(body), name
    for body, message in REFUSED:
        assert not validator.is_valid(body), message
    for body, message in REFUSED_FOR_THE_METADATA_TEXT:
        assert validator.is_valid(body), message


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
