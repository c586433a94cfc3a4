"""`with_request_id` sets the header exactly as Starlette's `MutableHeaders` did; new ids
keep their shape."""

from __future__ import annotations

import re

import pytest
from starlette.datastructures import MutableHeaders

from lkps.api.middleware import REQUEST_ID_HEADER, new_request_id, with_request_id

pytestmark = pytest.mark.unit

CASES = [
    [],
    [(b"content-type", b"application/json")],
    [(b"x-request-id", b"old"), (b"content-type", b"application/json")],
    [(b"a", b"1"), (b"x-request-id", b"old"), (b"b", b"2"), (b"x-request-id", b"older")],
    [(b"X-Request-ID", b"upper-case name, kept: raw names are compared")],
]


@pytest.mark.parametrize("headers", CASES)
def test_matches_mutable_headers(headers: list[tuple[bytes, bytes]]) -> None:
    message = {"type": "http.response.start", "headers": list(headers)}
    MutableHeaders(scope=message)[REQUEST_ID_HEADER] = "abc-123"
    assert with_request_id(headers, b"abc-123") == message["headers"]


def test_new_request_ids_are_32_hex_characters_and_unique() -> None:
    """The shape `uuid4().hex` gave (logs and audit records hold it), never repeated."""
    ids = [new_request_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids)
    assert len(set(ids)) == len(ids)
