"""Hand-written hostile HTTP: every request is refused with a 4xx carrying the contract's
body (`{"error", "message", "request_id"}`), never a 5xx.

Most cases go through the ASGI app in-process (the `lkps` fixture); those where HTTP
framing or header sizes matter go through a real uvicorn (`served`, a `ServerThread`),
raw on a socket when a client library would normalise what is being tested. Cases that
touch only request parsing run on SQLite; cases whose input reaches the store run on every
backend.

Open LKPS bugs are pinned by strict xfails (they fail loudly once fixed, so the marker
and the matching filter in test_schema_fuzz.py can go).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from livekit.api import TokenVerifier

from tests.conftest import AGENT, AGENT_2, API_AUDIENCE, CLIENT_A, Lkps, Served

pytestmark = [pytest.mark.api, pytest.mark.backends("sqlite")]
ON_EVERY_BACKEND = pytest.mark.backends("sqlite", "postgresql")

MAX_BODY = 65_536  # LKPS_MAX_BODY_BYTES' default
ADMIN_ROLES = ("LKPS.Admin", "LKPS.Auditor")


def assert_contract_error(response: httpx.Response, status: int, code: str) -> str:
    """The response is `status` with the contract's error body; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "message", "request_id"}, body
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    assert "Traceback" not in body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    return str(body["message"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post_raw(
    lkps: Lkps,
    path: str,
    content: bytes,
    *,
    token: str | None = None,
    content_type: str | None = "application/json",
) -> httpx.Response:
    headers = bearer(token or lkps.user_token())
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await lkps.http.post(path, content=content, headers=headers)


async def send_json(lkps: Lkps, path: str, body: str) -> httpx.Response:
    """`body` to `path` (PUT for overrides, POST otherwise) with the token it needs."""
    return await lkps.http.request(
        "PUT" if path.endswith("/authorization") else "POST",
        path,
        content=body.encode(),
        headers={**bearer(_token_for(lkps, path)), "Content-Type": "application/json"},
    )


def _token_for(lkps: Lkps, path: str) -> str:
    if path.startswith("/api/agent/"):
        return lkps.app_token()
    return lkps.user_token(roles=list(ADMIN_ROLES))


# Raw HTTP on a socket, for what httpx would normalise or refuse to send.


@dataclass
class RawResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def as_httpx(self) -> httpx.Response:
        return httpx.Response(self.status, headers=list(self.headers.items()), content=self.body)


def _address(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").partition(":")
    return host, int(port)


def raw_exchange(url: str, request: bytes, *, timeout: float = 10.0) -> RawResponse | None:
    """Send `request` as is; the response, or None when the server closed without one."""
    with socket.create_connection(_address(url), timeout=timeout) as connection:
        # The server may answer (and close) before it has read everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(request)
        response = http.client.HTTPResponse(connection)
        try:
            response.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None
        return RawResponse(response.status, response.headers, response.read())


def raw_request(
    method: str, target: str, headers: dict[str, str], body: bytes = b"", *, framed: bool = False
) -> bytes:
    """An HTTP/1.1 request; `framed`: the headers already say how long the body is."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if not framed and body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*chunks: bytes, extension: str = "") -> bytes:
    framed = b"".join(b"%x%s\r\n%s\r\n" % (len(c), extension.encode(), c) for c in chunks)
    return framed + b"0\r\n\r\n"


def auditor_token(served: Served) -> str:
    return served.entra.user_token(
        client_app_id=CLIENT_A, audience=API_AUDIENCE, roles=list(ADMIN_ROLES)
    )


# Oversized headers. ServerThread runs plain uvicorn with httptools, which sets no limit on
# header size or count, so LKPS itself answers: a 401 like any bad token. (`lkps serve` and
# `lkps dev` refuse such heads with 431 first: tests/cli/test_header_limits.py.)


def test_oversized_authorization_headers_are_refused_as_bad_tokens(served: Served) -> None:
    for size in (20_000, 100_000, 1_000_000):
        response = httpx.post(
            f"{served.url}/api/session/start",
            headers={"Authorization": "Bearer " + "A" * size},
            json={"agent_entra_app_id": AGENT},
        )
        assert_contract_error(response, 401, "invalid_token")
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_oversized_jwt_shaped_authorization_headers(served: Served) -> None:
    header, payload, signature = served.user_token().split(".")
    for size in (20_000, 100_000):
        padded = f"{header}.{payload}{'A' * size}.{signature}"
        response = httpx.get(f"{served.url}/api/agents", headers=bearer(padded))
        assert_contract_error(response, 401, "invalid_token")


def test_a_20_kb_request_id_is_replaced_not_echoed(served: Served) -> None:
    response = httpx.post(
        f"{served.url}/api/agent/register",
        headers={"X-Request-ID": "a" * 20_000, "X-Padding": "p" * 20_000},
    )
    assert_contract_error(response, 401, "invalid_token")
    assert len(response.headers["x-request-id"]) == 32


def test_five_thousand_headers(served: Served) -> None:
    headers = {f"X-Filler-{n}": "x" * 8 for n in range(5_000)}
    response = raw_exchange(served.url, raw_request("GET", "/api/audit", headers))
    assert response is not None
    assert_contract_error(response.as_httpx(), 401, "invalid_token")


def test_invalid_utf8_in_the_authorization_header(served: Served) -> None:
    # Header values go out as latin-1, so these are the raw bytes ff fe c0 af.
    request = raw_request("GET", "/api/agents", {"Authorization": "Bearer \xff\xfe\xc0\xaf"})
    response = raw_exchange(served.url, request)
    assert response is not None
    assert_contract_error(response.as_httpx(), 401, "invalid_token")


# Deep nesting: 10,000 levels is past the JSON parser's recursion limit (400 "nested too
# deeply"); 33 levels parses and breaks the metadata rule.


def _nested_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _nested_array(depth: int) -> str:
    return "[" * depth + "]" * depth


DEEP = 10_000


TEN_THOUSAND_LEVELS = {
    "metadata": (
        "/api/session/start",
        f'{{"agent_entra_app_id":"{AGENT}","metadata":{_nested_object(DEEP)}}}',
    ),
    "agent-id": ("/api/session/start", f'{{"agent_entra_app_id":{_nested_array(DEEP)}}}'),
    "register": ("/api/agent/register", f'{{"metadata":{{"list":{_nested_array(DEEP)}}}}}'),
    "heartbeat": ("/api/agent/heartbeat", f'{{"registration_id":{_nested_object(DEEP)}}}'),
    "override": (
        f"/api/agents/{AGENT}/authorization",
        f'{{"additional_clients":{_nested_array(DEEP)}}}',
    ),
    "top-level": ("/api/session/start", _nested_array(DEEP)),
}


async def test_ten_thousand_levels_of_nesting(lkps: Lkps, subtests: pytest.Subtests) -> None:
    for name, (path, body) in TEN_THOUSAND_LEVELS.items():
        with subtests.test(name):
            response = await send_json(lkps, path, body)
            message = assert_contract_error(response, 400, "bad_request")
            assert message == "The request body is nested too deeply"


async def test_ten_thousand_levels_inside_token_endpoint_metadata(lkps: Lkps) -> None:
    dispatch = {"agent_name": AGENT, "metadata": f'{{"a":{_nested_array(DEEP)}}}'}
    response = await lkps.http.post(
        "/api/session/token",
        json={"room_config": {"agents": [dispatch]}},
        headers=bearer(lkps.user_token()),
    )
    message = assert_contract_error(response, 400, "bad_request")
    assert message == '"room_config.agents[0].metadata" must be a JSON object, as a string'


async def test_metadata_deeper_than_32_levels(lkps: Lkps) -> None:
    for depth in (33, 500):
        body = f'{{"agent_entra_app_id":"{AGENT}","metadata":{_nested_object(depth)}}}'
        response = await post_raw(lkps, "/api/session/start", body.encode())
        message = assert_contract_error(response, 400, "bad_request")
        assert message == '"metadata" is nested more than 32 levels deep', depth


# Invalid UTF-8 in the body, and lone surrogates in JSON string escapes.


INVALID_UTF8 = {
    "ff": b"\xff",
    "bad-continuation": b"\xc3\x28",
    "overlong-slash": b"\xc0\xaf",
    "cesu-surrogate": b"\xed\xa0\x80",
    "truncated": b"\xe2\x82",
    "above-u10ffff": b"\xf4\x90\x80\x80",
}


async def test_invalid_utf8_in_the_body(lkps: Lkps, subtests: pytest.Subtests) -> None:
    for name, raw in INVALID_UTF8.items():
        in_a_value = b'{"agent_entra_app_id": "' + raw + b'"}'
        in_a_key = b'{"agent_entra_app_id": "%s", "metadata": {"' % AGENT.encode() + raw + b'": 1}}'
        for where, body in (("value", in_a_value), ("key", in_a_key)):
            with subtests.test(f"{name} in a {where}"):
                response = await post_raw(lkps, "/api/session/start", body)
                message = assert_contract_error(response, 400, "bad_request")
                assert message == "The request body is not valid UTF-8"


async def test_utf16_body_is_not_json_to_lkps(lkps: Lkps) -> None:
    body = json.dumps({"agent_entra_app_id": AGENT}).encode("utf-16")
    response = await post_raw(
        lkps, "/api/session/start", body, content_type="application/json; charset=utf-16"
    )
    assert_contract_error(response, 400, "bad_request")


SURROGATE = "\\ud800"  # a JSON escape for a lone surrogate, which Python's json accepts


LONE_SURROGATES = {
    "agent-id": ("/api/session/start", f'{{"agent_entra_app_id": "{SURROGATE}"}}'),
    "metadata-value": (
        "/api/session/start",
        f'{{"agent_entra_app_id": "{AGENT_2}", "metadata": {{"k": "{SURROGATE}"}}}}',
    ),
    "metadata-key": (
        "/api/session/start",
        f'{{"agent_entra_app_id": "{AGENT_2}", "metadata": {{"{SURROGATE}": 1}}}}',
    ),
    "reversed-pair": (
        "/api/session/start",
        f'{{"agent_entra_app_id": "{AGENT_2}", "metadata": {{"k": ["\\udfff\\ud800"]}}}}',
    ),
    "version": ("/api/agent/register", f'{{"version": "v{SURROGATE}"}}'),
    "register-metadata": ("/api/agent/register", f'{{"metadata": {{"k": "{SURROGATE}"}}}}'),
    "registration-id": ("/api/agent/heartbeat", f'{{"registration_id": "{SURROGATE}"}}'),
    "additional-clients": (
        f"/api/agents/{AGENT_2}/authorization",
        f'{{"additional_clients": ["{SURROGATE}"]}}',
    ),
    "agent-name": (
        "/api/session/token",
        f'{{"room_config": {{"agents": [{{"agent_name": "{SURROGATE}"}}]}}}}',
    ),
    "token-metadata": (
        "/api/session/token",
        '{"room_config": {"agents": [{"agent_name": "%s", "metadata": "{\\"k\\": \\"\\%s\\"}"}]}}'
        % (AGENT_2, SURROGATE),
    ),
    "identity": ("/api/session/token", f'{{"participant_identity": "{SURROGATE}"}}'),
}


async def test_lone_surrogate_escapes(lkps: Lkps, subtests: pytest.Subtests) -> None:
    """AGENT_2 is present and lets anyone in: a surrogate that slipped through would 200."""
    await lkps.register(AGENT_2, enforce_client_authz=False)
    for name, (path, body) in LONE_SURROGATES.items():
        with subtests.test(name):
            response = await send_json(lkps, path, body)
            message = assert_contract_error(response, 400, "bad_request")
            assert_api_words(message)


# What Python says of its own failures, which no message may repeat.
PYTHON_INTERNALS = ("codec", "can't encode", "surrogates not allowed", "sys.", "Traceback")


def assert_api_words(message: str) -> None:
    assert not any(internal in message for internal in PYTHON_INTERNALS), message


# Numbers: out of range, too long, signed zero, and the non-JSON constants.


OUT_OF_RANGE = {
    "metadata": (
        "/api/session/start",
        f'{{"agent_entra_app_id": "{AGENT_2}", "metadata": {{"n": 1e400}}}}',
    ),
    "negative": (
        "/api/session/start",
        f'{{"agent_entra_app_id": "{AGENT_2}", "metadata": {{"n": -1e400}}}}',
    ),
    "agent-id": ("/api/session/start", '{"agent_entra_app_id": 1e400}'),
    "boolean": ("/api/agent/register", '{"enforce_client_authz": 1e400}'),
    "version": ("/api/agent/register", '{"version": 1e400}'),
    "clients": (f"/api/agents/{AGENT_2}/authorization", '{"additional_clients": [1e400]}'),
    "agent-name": ("/api/session/token", '{"room_config": {"agents": [{"agent_name": 1e400}]}}'),
}


async def test_1e400(lkps: Lkps, subtests: pytest.Subtests) -> None:
    await lkps.register(AGENT_2, enforce_client_authz=False)
    for name, (path, body) in OUT_OF_RANGE.items():
        with subtests.test(name):
            response = await send_json(lkps, path, body)
            assert_contract_error(response, 400, "bad_request")


HUGE_INTEGER = "1" + "0" * 5_000  # 10**5000, past Python's 4,300-digit conversion limit


async def test_integer_of_5000_digits(lkps: Lkps, subtests: pytest.Subtests) -> None:
    bodies = {
        "metadata": f'{{"agent_entra_app_id": "{AGENT}", "metadata": {{"n": {HUGE_INTEGER}}}}}',
        "negative": f'{{"agent_entra_app_id": "{AGENT}", "metadata": {{"n": -{HUGE_INTEGER}}}}}',
        "agent-id": f'{{"agent_entra_app_id": {HUGE_INTEGER}}}',
    }
    for name, body in bodies.items():
        with subtests.test(name):
            response = await post_raw(lkps, "/api/session/start", body.encode())
            message = assert_contract_error(response, 400, "bad_request")
            assert (
                message == "The request body is not valid JSON: a number has more than 4300 digits"
            )
            assert_api_words(message)


async def test_hostile_numbers_as_the_audit_page_size(
    lkps: Lkps, subtests: pytest.Subtests
) -> None:
    for value in (HUGE_INTEGER, "-0", "1e400", "NaN", "-Infinity", "0x10"):
        with subtests.test(value[:12]):
            response = await lkps.http.get(
                "/api/audit",
                params={"limit": value},
                headers=bearer(_token_for(lkps, "/api/audit")),
            )
            assert_contract_error(response, 400, "bad_request")


async def test_nan_and_infinity_literals(lkps: Lkps, subtests: pytest.Subtests) -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        inner = f'{{\\"n\\": {literal}}}'
        cases = {
            "metadata": (
                "/api/session/start",
                f'{{"agent_entra_app_id": "{AGENT}", "metadata": {{"n": {literal}}}}}',
            ),
            "field": ("/api/agent/register", f'{{"enforce_client_authz": {literal}}}'),
            "token-metadata": (
                "/api/session/token",
                '{"room_config": {"agents": [{"agent_name": "%s", "metadata": "%s"}]}}'
                % (AGENT, inner),
            ),
        }
        for where, (path, body) in cases.items():
            with subtests.test(f"{literal} in {where}"):
                response = await send_json(lkps, path, body)
                message = assert_contract_error(response, 400, "bad_request")
                if where != "token-metadata":
                    assert (
                        message == f"The request body is not valid JSON: {literal} is not allowed"
                    )


async def test_negative_zero_is_a_number_not_an_id(lkps: Lkps) -> None:
    for body in ('{"agent_entra_app_id": -0}', '{"agent_entra_app_id": -0.0}'):
        response = await post_raw(lkps, "/api/session/start", body.encode())
        assert assert_contract_error(response, 400, "bad_request") == (
            '"agent_entra_app_id" must be a UUID'
        )


async def test_negative_zero_in_metadata_reaches_the_agent_as_sent(
    lkps: Lkps, livekit_verifier: TokenVerifier
) -> None:
    """Not a 4xx: -0 and -0.0 are valid JSON, and the agent gets exactly the numbers."""
    await lkps.register(AGENT_2, enforce_client_authz=False)
    body = f'{{"agent_entra_app_id": "{AGENT_2}", "metadata": {{"i": -0, "f": -0.0}}}}'
    response = await post_raw(lkps, "/api/session/start", body.encode())
    assert response.status_code == 200, response.text
    config = livekit_verifier.verify(response.json()["participant_token"]).room_config
    assert config is not None
    assert config.agents[0].metadata == '{"i":-0,"f":-0.0}'


# Duplicate keys: Python's parser keeps the last one, a gateway or WAF may keep the first
# and check a different request than LKPS serves. A key twice in one object is a 400.


async def test_a_body_key_given_twice_is_refused_whichever_value_is_valid(lkps: Lkps) -> None:
    await lkps.register(AGENT_2, enforce_client_authz=False)
    for first, second in ((AGENT_2, "x"), ("x", AGENT_2)):
        body = f'{{"agent_entra_app_id": "{first}", "agent_entra_app_id": "{second}"}}'
        response = await post_raw(lkps, "/api/session/start", body.encode())
        assert assert_contract_error(response, 400, "bad_request") == (
            'The request body has the key "agent_entra_app_id" more than once'
        )


async def test_duplicate_keys_cannot_smuggle_a_second_enforcement_value(lkps: Lkps) -> None:
    body = b'{"enforce_client_authz": true, "enforce_client_authz": "maybe"}'
    response = await post_raw(lkps, "/api/agent/register", body, token=lkps.app_token())
    assert assert_contract_error(response, 400, "bad_request") == (
        'The request body has the key "enforce_client_authz" more than once'
    )


# Body size: 64 KiB is the limit, with or without Content-Length.


def _padded_body(size: int) -> bytes:
    head = f'{{"agent_entra_app_id": "{uuid.uuid4()}"'.encode()
    return head + b" " * (size - len(head) - 1) + b"}"


async def test_64_kib_plus_one_with_content_length(lkps: Lkps) -> None:
    response = await post_raw(lkps, "/api/session/start", _padded_body(MAX_BODY + 1))
    message = assert_contract_error(response, 413, "payload_too_large")
    assert message == f"The request body is larger than {MAX_BODY} bytes"


async def test_64_kib_plus_one_streamed_without_content_length(lkps: Lkps) -> None:
    body = _padded_body(MAX_BODY + 1)

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = await lkps.http.post(
        "/api/session/start",
        content=stream(),
        headers={**bearer(lkps.user_token()), "Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_contract_error(response, 413, "payload_too_large")


async def test_exactly_64_kib_is_read(lkps: Lkps) -> None:
    response = await post_raw(lkps, "/api/session/start", _padded_body(MAX_BODY))
    assert assert_contract_error(response, 404, "not_found").endswith("is not connected")


def test_64_kib_plus_one_chunked_through_uvicorn(served: Served) -> None:
    body = _padded_body(MAX_BODY + 1)
    pieces = [body[start : start + 1024] for start in range(0, len(body), 1024)]
    headers = {
        **bearer(served.user_token()),
        "Content-Type": "application/json",
        "Transfer-Encoding": "chunked",
    }
    request = raw_request("POST", "/api/session/start", headers, chunked(*pieces), framed=True)
    response = raw_exchange(served.url, request)
    assert response is not None
    assert_contract_error(response.as_httpx(), 413, "payload_too_large")


def test_a_declared_content_length_over_64_kib_is_refused_before_the_body(
    served: Served,
) -> None:
    headers = {
        **bearer(served.user_token()),
        "Content-Type": "application/json",
        "Content-Length": str(10 * 1024 * 1024),
    }
    response = raw_exchange(served.url, raw_request("POST", "/api/session/start", headers))
    assert response is not None
    assert_contract_error(response.as_httpx(), 413, "payload_too_large")


# Chunked bodies through uvicorn.


def test_chunked_body_split_inside_a_string_with_chunk_extensions(served: Served) -> None:
    body = json.dumps({"agent_entra_app_id": AGENT, "metadata": {"k": "ü" * 10}}).encode()
    pieces = [body[:7], body[7:8], body[8:40], body[40:]]
    headers = {**bearer(served.user_token()), "Transfer-Encoding": "chunked"}
    request = raw_request(
        "POST", "/api/session/start", headers, chunked(*pieces, extension=";x=y"), framed=True
    )
    response = raw_exchange(served.url, request)
    assert response is not None
    assert response.status == 200, response.body  # AGENT is registered, CLIENT_A allowed


def test_chunked_body_that_is_not_json(served: Served) -> None:
    headers = {
        **bearer(served.user_token()),
        "Content-Type": "application/json",
        "Transfer-Encoding": "chunked",
    }
    request = raw_request(
        "POST", "/api/session/start", headers, chunked(b'{"agent_', b"entra_app_id"), framed=True
    )
    response = raw_exchange(served.url, request)
    assert response is not None
    message = assert_contract_error(response.as_httpx(), 400, "bad_request")
    assert message.startswith("The request body is not valid JSON")


MALFORMED_FRAMING: list[tuple[dict[str, str], bytes]] = [
    ({"Transfer-Encoding": "chunked"}, b"zz\r\n{}\r\n0\r\n\r\n"),  # chunk size not hex
    ({"Transfer-Encoding": "chunked"}, b"2\r\n{}XX0\r\n\r\n"),  # chunk not terminated
    ({"Transfer-Encoding": "chunked", "Content-Length": "2"}, b"2\r\n{}\r\n0\r\n\r\n"),
    ({"Content-Length": "two"}, b"{}"),
    ({"Content-Length": "-1"}, b"{}"),
]


def test_malformed_framing_is_refused_by_uvicorn(served: Served) -> None:
    """uvicorn refuses these before LKPS runs: a 400 with its own plain-text body (not the
    contract's, which only LKPS can write), and the connection is closed."""
    for framing, body in MALFORMED_FRAMING:
        headers = {**bearer(served.user_token()), "Content-Type": "application/json", **framing}
        request = raw_request("POST", "/api/session/start", headers, body, framed=True)
        response = raw_exchange(served.url, request)
        assert response is not None, framing
        assert (response.status, response.body) == (400, b"Invalid HTTP request received."), framing
    assert httpx.get(f"{served.url}/api/health").status_code == 200


def test_a_body_cut_off_mid_chunk_is_not_a_server_error(served: Served) -> None:
    headers = {
        **bearer(served.user_token()),
        "Content-Type": "application/json",
        "Transfer-Encoding": "chunked",
    }
    head = raw_request("POST", "/api/session/start", headers, framed=True)
    with socket.create_connection(_address(served.url), timeout=5) as connection:
        connection.sendall(head + b"40\r\n" + b'{"agent_entra_app_id": ')
    assert httpx.get(f"{served.url}/api/health").status_code == 200
    # The server sees the disconnect on its next read, after this test's close.
    records = _audit_records_eventually(served, event="session.start")
    assert all(record["status"] < 500 for record in records), records


def _audit_records_eventually(served: Served, **query: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        response = httpx.get(
            f"{served.url}/api/audit", params=query, headers=bearer(auditor_token(served))
        )
        assert response.status_code == 200, response.text
        records: list[dict[str, Any]] = response.json()["records"]
        if records or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


# Content types: anything but application/json or *+json is a 415.


NOT_JSON = [
    "text/plain",
    "text/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/xml",
    "application/jsonx",
    "application/json-seq",
    "application/octet-stream",
    "",
    "json",
    "*/*",
]


async def test_wrong_content_types(lkps: Lkps, subtests: pytest.Subtests) -> None:
    body = json.dumps({"agent_entra_app_id": AGENT}).encode()
    for content_type in NOT_JSON:
        with subtests.test(content_type or "<empty>"):
            response = await post_raw(lkps, "/api/session/start", body, content_type=content_type)
            message = assert_contract_error(response, 415, "unsupported_media_type")
            assert message == "The request body must be application/json"


async def test_json_content_types_are_read(lkps: Lkps, subtests: pytest.Subtests) -> None:
    body = json.dumps({"agent_entra_app_id": str(uuid.uuid4())}).encode()
    for content_type in (
        None,
        "APPLICATION/JSON",
        "application/json; charset=utf-8",
        "application/problem+json",
    ):
        with subtests.test(content_type or "<none>"):
            response = await post_raw(lkps, "/api/session/start", body, content_type=content_type)
            assert assert_contract_error(response, 404, "not_found").endswith("is not connected")


async def test_form_bodies_on_every_body_endpoint(lkps: Lkps, subtests: pytest.Subtests) -> None:
    for path in ("/api/agent/register", f"/api/agents/{AGENT}/authorization", "/api/session/token"):
        with subtests.test(path):
            response = await lkps.http.request(
                "PUT" if path.endswith("/authorization") else "POST",
                path,
                data={"enforce_client_authz": "true"},
                headers=bearer(_token_for(lkps, path)),
            )
            assert_contract_error(response, 415, "unsupported_media_type")


# Methods and paths LKPS does not serve.


NOT_ALLOWED = [
    ("GET", "/api/session/start", "POST"),
    ("PUT", "/api/session/token", "POST"),
    ("GET", "/api/agent/register", "POST"),
    ("DELETE", "/api/agent/heartbeat", "POST"),
    ("PATCH", "/api/agent/deregister", "POST"),
    ("POST", "/api/agents", "GET"),
    ("PATCH", f"/api/agents/{AGENT}/authorization", "GET"),
    ("POST", f"/api/agents/{AGENT}/authorization", "GET"),
    ("DELETE", "/api/audit", "GET"),
    ("POST", "/api/audit/verify", "GET"),
    ("POST", "/api/health", "GET"),
    ("PUT", "/api/health/ready", "GET"),
    ("OPTIONS", "/api/session/start", "POST"),
    ("TRACE", "/api/health", "GET"),
]


async def test_methods_not_allowed(lkps: Lkps, subtests: pytest.Subtests) -> None:
    for method, path, allowed in NOT_ALLOWED:
        with subtests.test(f"{method} {path}"):
            response = await lkps.http.request(method, path, headers=bearer(lkps.user_token()))
            assert_contract_error(response, 405, "method_not_allowed")
            assert allowed in response.headers["allow"].replace(" ", "").split(",")


async def test_405_allow_lists_every_method_of_the_resource(lkps: Lkps) -> None:
    # F6 (fixed): the Allow header named only the first route matching the path (`GET`).
    for method in ("PATCH", "POST", "OPTIONS"):
        response = await lkps.http.request(method, f"/api/agents/{AGENT}/authorization")
        assert_contract_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == "GET, PUT, DELETE"


UNKNOWN_PATHS = [
    "/",
    "/api",
    "/api/nope",
    "/api/session",
    "/API/health",
    "/api/health/ready/now",
    "/api/agent/register.json",
    f"/api/agents/{AGENT}",
    f"/api/agents/{AGENT}/authorization/extra",
    "/docs",
    "/openapi.json",
    "/api/%2e%2e/api/health",
    "/api/health%00",
]


async def test_unknown_paths(lkps: Lkps, subtests: pytest.Subtests) -> None:
    for path in UNKNOWN_PATHS:
        for method in ("GET", "POST", "PATCH"):
            with subtests.test(f"{method} {path}"):
                response = await lkps.http.request(method, path, headers=bearer(lkps.user_token()))
                assert assert_contract_error(response, 404, "not_found") == "Not Found"


def test_a_trailing_slash_is_just_an_unknown_path(served: Served) -> None:
    """No redirect (it would be built from the caller's Host header): the contract 404."""
    for path in ("/api/agents/", "/api/audit/", "/api/agent/register/"):
        response = httpx.post(f"{served.url}{path}", headers={"Host": "lkps.example"})
        assert response.status_code == 404
        assert "location" not in response.headers
        assert response.json()["error"] == "not_found"
        assert len(response.headers["x-request-id"]) == 32


# Traversal-ish agent ids: never another endpoint, never a 2xx or 5xx, never an override.

TRAVERSAL_IDS = [
    "..",
    "...",
    "%2e%2e",
    "%2E%2E%2F%2E%2E%2Faudit",
    "..%2f..%2faudit%2fverify",
    "..%5c..%5caudit",
    "%252e%252e%252f",
    f"{AGENT}%2f..",
    f"{AGENT}%00",
    "%00",
    f"{AGENT}%20",
    f"%20{AGENT}",
    f"{AGENT}%0d%0aX-Injected:%201",
    "%ef%bc%a1" * 32,
    "a" * 10_000,
    f"{AGENT}/..",
    f"../{AGENT}",
    f"..;/{AGENT}",
]


def test_traversal_ish_agent_ids(served: Served) -> None:
    host, port = _address(served.url)
    body = json.dumps({"enforce_client_authz": False, "additional_clients": [CLIENT_A]})
    headers = {**bearer(auditor_token(served)), "Content-Type": "application/json"}
    for agent_id in TRAVERSAL_IDS:
        for method in ("GET", "PUT", "DELETE"):
            connection = http.client.HTTPConnection(host, port, timeout=10)
            try:
                connection.request(
                    method,
                    f"/api/agents/{agent_id}/authorization",
                    body=body if method == "PUT" else None,
                    headers=headers,
                )
                raw = connection.getresponse()
                response = httpx.Response(
                    raw.status, headers=list(raw.headers.items()), content=raw.read()
                )
            finally:
                connection.close()
            if response.status_code == 400:
                message = assert_contract_error(response, 400, "bad_request")
                assert message == '"path.agent_id" must be a UUID', (agent_id, message)
            else:
                assert_contract_error(response, 404, "not_found")
            assert "x-injected" not in response.headers
    listed = httpx.get(f"{served.url}/api/agents", headers=bearer(auditor_token(served)))
    assert listed.status_code == 200
    assert all(agent["override"] is None for agent in listed.json()["agents"])


# 10,000 query parameters on /api/audit. Compact ones (40 KB) reach LKPS; a query of
# 64 KiB or more does not: httptools cannot parse such a URL, and uvicorn answers 400.

TEN_THOUSAND = 10_000
UNKNOWN_PARAMETERS = "&".join(["a=1"] * TEN_THOUSAND)


async def test_ten_thousand_unknown_query_parameters_are_ignored(lkps: Lkps) -> None:
    response = await lkps.http.get(
        f"/api/audit?{UNKNOWN_PARAMETERS}", headers=bearer(_token_for(lkps, "/api/audit"))
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"records", "next_cursor"}


async def test_ten_thousand_query_parameters_and_one_invalid(
    lkps: Lkps, subtests: pytest.Subtests
) -> None:
    for last in (
        "limit=0",
        "limit=x",
        "event=nope",
        "since=yesterday",
        "cursor=%25",
        "agent_id=..",
    ):
        with subtests.test(last):
            query = "&".join(["a="] * (TEN_THOUSAND - 1) + [last])
            response = await lkps.http.get(
                f"/api/audit?{query}", headers=bearer(_token_for(lkps, "/api/audit"))
            )
            assert_contract_error(response, 400, "bad_request")


async def test_ten_thousand_query_parameters_without_a_token(lkps: Lkps) -> None:
    response = await lkps.http.get(f"/api/audit?{UNKNOWN_PARAMETERS}")
    assert_contract_error(response, 401, "invalid_token")


def _get_audit_raw(served: Served, query: str) -> RawResponse:
    request = raw_request("GET", f"/api/audit?{query}", bearer(auditor_token(served)))
    response = raw_exchange(served.url, request)
    assert response is not None
    return response


def test_ten_thousand_query_parameters_through_uvicorn(served: Served) -> None:
    response = _get_audit_raw(served, UNKNOWN_PARAMETERS)
    assert response.status == 200, response.body
    assert set(json.loads(response.body)) == {"records", "next_cursor"}


def test_a_query_of_64_kib_or_more_is_refused_by_uvicorn(served: Served) -> None:
    query = "&".join(f"p{n}={n}" for n in range(TEN_THOUSAND))  # 108 KB
    response = _get_audit_raw(served, query)
    assert response.status == 400
    assert response.body == b"Invalid HTTP request received."
    assert httpx.get(f"{served.url}/api/health").status_code == 200


# Input that reaches the store: the same answer on every backend, never a 5xx. (Both were
# 503s: U+0000 on PostgreSQL, and date-times that UTC cannot represent on either engine.)


@ON_EVERY_BACKEND
async def test_nul_in_the_agent_version_is_stored_exactly(lkps: Lkps) -> None:
    version = "v1\u0000evil"
    response = await lkps.register(version=version)
    assert response.status_code == 200, response.text
    listed = await lkps.http.get("/api/agents", headers=bearer(_token_for(lkps, "/api/agents")))
    assert listed.status_code == 200, listed.text
    assert [agent["version"] for agent in listed.json()["agents"]] == [version]


@ON_EVERY_BACKEND
async def test_nul_in_audit_search_terms_matches_nothing(
    lkps: Lkps, subtests: pytest.Subtests
) -> None:
    await lkps.register()
    for parameter in ("cwid", "client_app_id", "event", "outcome", "agent_id"):
        with subtests.test(parameter):
            response = await lkps.http.get(
                "/api/audit",
                params={parameter: "a\u0000b"},
                headers=bearer(_token_for(lkps, "/api/audit")),
            )
            if response.status_code == 400:  # not an event, outcome or UUID at all
                assert_contract_error(response, 400, "bad_request")
            else:
                assert response.status_code == 200, response.text
                assert response.json()["records"] == []


@ON_EVERY_BACKEND
async def test_dates_that_utc_cannot_represent(lkps: Lkps, subtests: pytest.Subtests) -> None:
    await lkps.register()
    for parameter, value in (
        ("until", "0001-01-01T00:00:00+01:00"),
        ("since", "9999-12-31T23:59:59-01:00"),
        ("until", "0001-01-01T00:00:00+23:59"),
        ("since", "9999-12-31T23:59:59.999999-23:59"),
    ):
        with subtests.test(f"{parameter}={value}"):
            response = await lkps.http.get(
                "/api/audit",
                params={parameter: value},
                headers=bearer(_token_for(lkps, "/api/audit")),
            )
            if response.status_code == 400:
                assert_contract_error(response, 400, "bad_request")
            else:
                assert response.status_code == 200, response.text
                assert response.json()["records"] == []  # nothing before year 1 or after 9999
