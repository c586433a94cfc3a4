"""The request-head rules (`lkps.http.head`) and the protocol setting uvicorn receives.

The protocols themselves run against real sockets in tests/cli/test_header_limits.py.
"""

from __future__ import annotations

import json
import pickle

import pytest

from lkps.config import Settings
from lkps.http.head import HeadCounter, HeaderLimits, HeadTooLarge, refusal
from lkps.http.protocols import (
    H11HeadLimitProtocol,
    HttpToolsHeadLimitProtocol,
    uvicorn_protocol,
)

pytestmark = pytest.mark.unit

LIMITS = HeaderLimits(line_bytes=20, total_bytes=60, count=3)


def test_a_header_at_the_line_limit_passes_and_one_byte_more_does_not() -> None:
    counter = HeadCounter(LIMITS)
    counter.header(b"name", b"v" * 14)  # "name: " + 14 = 20
    with pytest.raises(HeadTooLarge, match="longer than 20 bytes"):
        counter.header(b"name", b"v" * 15)


def test_the_count_is_per_head() -> None:
    counter = HeadCounter(LIMITS)
    for _ in range(3):
        counter.header(b"a", b"b")
    with pytest.raises(HeadTooLarge, match="more than 3 headers"):
        counter.header(b"a", b"b")
    counter.start()
    counter.header(b"a", b"b")


def test_the_total_counts_the_target_and_each_line_with_its_line_end() -> None:
    counter = HeadCounter(LIMITS)
    counter.target(20)
    counter.header(b"n", b"v" * 15)  # 18 + 2 -> 40
    counter.header(b"n", b"v" * 15)  # -> 60: at the limit
    counter.start()
    counter.target(41)
    with pytest.raises(HeadTooLarge, match="larger than 60 bytes in total"):
        counter.header(b"n", b"v" * 15)


def test_the_refusal_is_a_complete_431_with_the_contract_body() -> None:
    raw = refusal("too big", [(b"date", b"today")])
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["date"] == "today"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    document = json.loads(body)
    assert document == {
        "error": "header_fields_too_large",
        "message": "too big",
        "request_id": headers["x-request-id"],
    }


@pytest.mark.parametrize(
    ("implementation", "protocol"),
    [("httptools", HttpToolsHeadLimitProtocol), ("h11", H11HeadLimitProtocol)],
)
def test_the_protocol_setting_carries_the_limits_into_worker_processes(
    implementation: str, protocol: type[object]
) -> None:
    settings = Settings(
        http_implementation=implementation,
        max_header_line_bytes=2048,
        max_header_total_bytes=8192,
        max_header_count=20,
    )
    # uvicorn pickles its configuration into each worker with LKPS_WORKERS > 1.
    factory = pickle.loads(pickle.dumps(uvicorn_protocol(settings)))  # noqa: S301
    assert factory.func is protocol
    assert factory.keywords == {"limits": HeaderLimits(2048, 8192, 20)}
