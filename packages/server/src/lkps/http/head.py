"""Limits on a request's head (request line and headers), and the 431 that ends it.

uvicorn reads a head without limit under httptools: a 100 MB header was read for 15 s
(httptools grows a partial header by concatenation, so the work is quadratic) and then
served. These rules are what both of LKPS's uvicorn protocols (`lkps.http.protocols`)
apply while a head arrives, so a head past a limit is refused after about the limit's
worth of bytes, never buffered whole.

Two measures, one per limit:
- raw bytes read for the head so far (CRLFs included), checked before the parser sees
  them: `HeaderLimits.total_bytes`;
- each header the parser hands over, measured as `name: value` (without the line end and
  the spaces a client may add around the value): `line_bytes` per header, `count`
  headers, and the request target plus every `name: value\\r\\n` within `total_bytes`
  (a lower bound of the raw size, which backs up the raw check where it cannot be exact).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

from lkps.api.middleware import REQUEST_ID_HEADER, new_request_id
from lkps.config import Settings

STATUS = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
ERROR_CODE = "header_fields_too_large"


@dataclass(frozen=True)
class HeaderLimits:
    line_bytes: int
    total_bytes: int
    count: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HeaderLimits:
        return cls(
            line_bytes=settings.max_header_line_bytes,
            total_bytes=settings.max_header_total_bytes,
            count=settings.max_header_count,
        )

    def total_message(self) -> str:
        return f"The request headers are larger than {self.total_bytes} bytes in total"


class HeadTooLarge(Exception):
    """A request head broke a limit; the message is what the caller reads."""


class HeadCounter:
    """The parsed measures of one request head, checked as each part arrives."""

    def __init__(self, limits: HeaderLimits) -> None:
        self.limits = limits
        self.count = 0
        self.total = 0

    def start(self) -> None:
        """A new request head begins."""
        self.count = self.total = 0

    def target(self, length: int) -> None:
        """`length` more bytes of the request target (httptools may hand it in parts)."""
        self._add(length)

    def header(self, name: bytes, value: bytes) -> None:
        line = len(name) + 2 + len(value)
        if line > self.limits.line_bytes:
            raise HeadTooLarge(f"A request header is longer than {self.limits.line_bytes} bytes")
        self.count += 1
        if self.count > self.limits.count:
            raise HeadTooLarge(f"The request has more than {self.limits.count} headers")
        self._add(line + 2)

    def _add(self, length: int) -> None:
        self.total += length
        if self.total > self.limits.total_bytes:
            raise HeadTooLarge(self.limits.total_message())


def refusal(message: str, default_headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The whole 431 response, written straight to the socket before the connection is
    closed: the contract's JSON error body under a fresh request id (nothing of the
    refused head is read, so a caller's X-Request-ID is not either)."""
    request_id = new_request_id()
    body = json.dumps(
        {"error": ERROR_CODE, "message": message, "request_id": request_id},
        separators=(",", ":"),
    ).encode()
    head = [f"HTTP/1.1 {STATUS.value} {STATUS.phrase}".encode()]
    head += [name + b": " + value for name, value in default_headers]
    head += [
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        f"{REQUEST_ID_HEADER}: {request_id}".encode(),
        b"connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body
