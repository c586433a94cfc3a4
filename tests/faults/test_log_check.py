"""The log check the fault tests rely on finds what it is meant to find: otherwise their
"0 leaking" would prove nothing."""

from __future__ import annotations

import json

import pytest

from lkps_testkit import EntraDouble
from tests.conftest import API_AUDIENCE, CLIENT_A
from tests.faults.logs import check_logs, leaks, pieces
from tests.faults.traffic import SESSION_START, Exchange, Traffic

pytestmark = pytest.mark.unit


def line(**fields: object) -> str:
    return json.dumps({"time": "t", "level": "info", "logger": "lkps.x", "message": "m", **fields})


def test_fragments_of_secrets_are_found_anywhere_in_a_line() -> None:
    entra = EntraDouble()
    token = entra.user_token(audience=API_AUDIENCE, client_app_id=CLIENT_A)
    _, payload, signature = token.split(".")
    claims = entra.user_claims(audience=API_AUDIENCE, client_app_id=CLIENT_A)
    token_with_claims = entra.sign(claims)
    secret = "a-client-secret-of-some-length-0123"
    index = pieces([token, token_with_claims, secret])
    assert leaks(line(message=f"x{signature[7:38]}y"), index)  # any 31 characters
    assert leaks(line(message=f"Bearer {token}"), index)
    assert leaks(line(detail=payload[40:80]), index)
    assert leaks(line(aio=claims["aio"]), index)  # a token's contents, decoded
    assert leaks(line(message=f"secret={secret}"), index)
    assert not leaks(line(message=f"kid {entra.signing_key.kid} unknown", x=signature[:12]), index)
    assert not leaks(token.split(".")[0], index)  # the header is no secret


def test_lines_are_held_to_json_request_ids_and_statuses() -> None:
    traffic = Traffic()
    answered = Exchange("a", SESSION_START, 200, None, "rid-1", {}, {}, 0.0, 0.0)
    traffic.exchanges.append(answered)
    traffic.secrets.add("s" * 40)
    logs = {
        "a": "\n".join(
            [
                "Traceback (most recent call last):",
                line(logger="lkps.audit", audit_event="session.start", status=200),
                line(request_id="rid-2"),
                line(message="s" * 40),
            ]
        )
    }
    report = check_logs(logs, traffic)
    assert report.lines == 4
    assert report.not_json == ["Traceback (most recent call last):"]
    assert len(report.missing_request_id) == 1
    assert report.unknown_request_ids == {"rid-2"}
    assert report.unlogged_answers == ["a /api/session/start 200 rid-1"]
    assert len(report.leaking) == 1
