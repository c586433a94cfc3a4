"""Issue 13: the agent receives the client's metadata JSON text as sent, compacted
(whitespace between tokens removed, nothing re-encoded), through both session endpoints;
a key given twice in one object is a 400."""

from __future__ import annotations

import json

import httpx
import pytest
from livekit.api import TokenVerifier

from tests.conftest import AGENT, Lkps

pytestmark = pytest.mark.api

DISPATCH = "room_config.agents[0].metadata"


@pytest.fixture
async def present(lkps: Lkps) -> Lkps:
    assert (await lkps.register(AGENT, enforce_client_authz=False)).status_code == 200
    return lkps


async def via_start(lkps: Lkps, metadata_text: str) -> httpx.Response:
    """`metadata_text` as the `metadata` member of `/api/session/start`'s body, verbatim."""
    body = f'{{ "agent_entra_app_id" : "{AGENT}" ,\n  "metadata" :  {metadata_text} }}'
    return await post_text(lkps, "/api/session/start", body)


async def via_token(lkps: Lkps, metadata_text: str) -> httpx.Response:
    """`metadata_text` as the dispatch's metadata string of `/api/session/token`."""
    dispatch = {"agent_name": AGENT, "metadata": metadata_text}
    return await post_text(
        lkps, "/api/session/token", json.dumps({"room_config": {"agents": [dispatch]}})
    )


async def post_text(lkps: Lkps, path: str, body: str) -> httpx.Response:
    return await lkps.http.post(
        path,
        content=body.encode(),
        headers={
            "Authorization": f"Bearer {lkps.user_token()}",
            "Content-Type": "application/json",
        },
    )


ENDPOINTS = {"start": via_start, "token": via_token}
FIELDS = {"start": "metadata", "token": DISPATCH}


def dispatched(response: httpx.Response, verifier: TokenVerifier) -> str:
    assert response.status_code in (200, 201), response.text
    config = verifier.verify(response.json()["participant_token"]).room_config
    assert config is not None
    return str(config.agents[0].metadata)


def refusal(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "bad_request"
    return str(body["message"])


# What the client wrote (whitespace between tokens aside) is what the agent reads.
AS_SENT = [
    # Numbers keep their text: no 1.0 -> 1, 1e2 -> 100.0, long decimal -> 0.1, -0 -> 0.
    (
        '{"n": 1.0, "m": 1e2, "b": 0.1000000000000000055511151231257827, "z": -0, "E": 1E-7}',
        '{"n":1.0,"m":1e2,"b":0.1000000000000000055511151231257827,"z":-0,"E":1E-7}',
    ),
    # Whitespace inside strings, and escaped quotes and backslashes next to it, stay.
    (
        '{ "a b" : "  two  spaces ", "q": " \\" x \\\\ ", "t": "\\t\\n" }',
        '{"a b":"  two  spaces ","q":" \\" x \\\\ ","t":"\\t\\n"}',
    ),
    # Escapes stay as escapes, raw characters as raw characters, pairs as pairs.
    (
        '{"e": "\\u00e9", "r": "é", "s": "\\/", "p": "\\ud83d\\ude00", "k\\u0041": 1}',
        '{"e":"\\u00e9","r":"é","s":"\\/","p":"\\ud83d\\ude00","k\\u0041":1}',
    ),
    # Tabs, CR and LF between tokens go; nesting and the client's key order stay.
    (
        '{\n\t"z": [ 1 ,\r\n 2, { "y" : null , "x": true } ],\n "a": {} }',
        '{"z":[1,2,{"y":null,"x":true}],"a":{}}',
    ),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("sent", "received"), AS_SENT)
async def test_the_agent_receives_the_text_as_sent_compacted(
    present: Lkps, livekit_verifier: TokenVerifier, endpoint: str, sent: str, received: str
) -> None:
    response = await ENDPOINTS[endpoint](present, sent)
    assert dispatched(response, livekit_verifier) == received


DUPLICATES = {
    "top level": ('{"a": 1, "b": 2, "a": 1}', "a"),
    "nested": ('{"a": {"b": {"c": 1, "c": 2}}}', "c"),
    "in a list": ('{"a": [{"k": 1}, {"k": 1, "k": 1}]}', "k"),
    "same value": ('{"x": true, "x": true}', "x"),
    "escaped spelling": ('{"x": 1, "\\u0078": 2}', "x"),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("case", DUPLICATES)
async def test_a_key_twice_in_one_object_is_a_400(present: Lkps, endpoint: str, case: str) -> None:
    text, key = DUPLICATES[case]
    message = refusal(await ENDPOINTS[endpoint](present, text))
    assert message == f'"{FIELDS[endpoint]}" has the key "{key}" more than once'


async def test_the_same_key_in_sibling_objects_is_no_duplicate(
    present: Lkps, livekit_verifier: TokenVerifier
) -> None:
    text = '{"a":{"k":1},"b":{"k":2},"c":[{"k":3},{"k":4}]}'
    for endpoint in ENDPOINTS.values():
        assert dispatched(await endpoint(present, text), livekit_verifier) == text


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"k": "\\ud800"}', "{field}.k"),
        ('{"k": ["ok", "x\\udfff"]}', "{field}.k[1]"),
        ('{"k": "\\udfff\\ud800"}', "{field}.k"),
        ('{"\\ud800": 1}', "a key of {field}"),
    ],
)
async def test_a_lone_surrogate_is_refused_in_the_apis_words(
    present: Lkps, endpoint: str, text: str, where: str
) -> None:
    field = FIELDS[endpoint]
    message = refusal(await ENDPOINTS[endpoint](present, text))
    assert message == (
        f'"{field}" must be valid Unicode text (a lone surrogate in {where.format(field=field)})'
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_the_size_limit_applies_to_the_compact_text(
    present: Lkps, livekit_verifier: TokenVerifier, endpoint: str
) -> None:
    # 10,240 bytes compact, with 5,000 spaces between tokens that do not count.
    filler = "x" * (10_240 - len('{"k":""}'))
    padded = '{"k"' + " " * 5_000 + ': "' + filler + '"}'
    assert dispatched(await ENDPOINTS[endpoint](present, padded), livekit_verifier) == (
        '{"k":"' + filler + '"}'
    )
    # One byte more is refused, however it is spaced; an escape counts as written.
    over = '{"k": "' + filler[:-5] + '\\u00e9"}'
    message = refusal(await ENDPOINTS[endpoint](present, over))
    assert message.startswith(f'"{FIELDS[endpoint]}" is 10241 bytes as compact JSON')
