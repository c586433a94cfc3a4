"""`with_request_id` sets the header exactly as Starlette's `MutableHeaders` did."""

from __future__ import annotations

import pytest
from starlette.datastructures import MutableHeaders

from lkps.api.middleware import REQUEST_ID_HEADER, with_request_id

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
