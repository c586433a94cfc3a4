"""uvicorn's two HTTP/1.1 protocols with LKPS's limits on the request head.

uvicorn sets no limit under httptools (its default), and under h11 one limit on the
buffered head (`h11_max_incomplete_event_size`, answered with a plain-text 400). Both
subclasses here refuse a head past `HeaderLimits` with the contract's 431 and close the
connection, reading no further:

- Raw bytes: while a head is being read, at most the rest of `total_bytes` is handed to
  the parser; if the head has not ended by then, the 431 goes out and the connection
  closes. The parser never holds more than the limit, and each read costs what its bytes
  cost, so other requests on the event loop carry on (tests/cli/test_header_limits.py).
  This is exact for a head that starts a read: every client but a pipelining one. A
  pipelined head that starts in the middle of a read is counted from the next read on;
  the parsed measures below still hold for it, and the part not counted is at most one
  read (asyncio reads 256 KiB at most).
- Parsed measures: each header the parser hands over (`HeadCounter`): its length, the
  number of headers and their sum.

`uvicorn_protocol` picks the class for `LKPS_HTTP_IMPLEMENTATION` and binds the limits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, cast

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from lkps.config import Settings
from lkps.http.head import STATUS, HeadCounter, HeaderLimits, HeadTooLarge, refusal

logger = logging.getLogger("lkps.http")


def _feed_within_limit(
    protocol: asyncio.Protocol,
    transport: asyncio.Transport,
    data: bytes,
    *,
    head_read: Callable[[], int | None],
    limits: HeaderLimits,
    feed: Callable[[bytes], None],
    refuse: Callable[[str], None],
) -> None:
    """Hand `data` to the parser (`feed`), never more of a head than `limits` allow.

    `head_read()` is how many bytes of an unfinished head the parser holds, or None when
    it is not reading one (a body, or a request being answered)."""
    read = head_read()
    allowed = len(data) if read is None else max(limits.total_bytes - read, 0)
    if len(data) <= allowed:
        feed(data)
        return
    feed(data[:allowed])
    if transport.is_closing():
        return
    if head_read() is not None:
        refuse(limits.total_message())
        return
    # The head ended within the limit; what follows is its body (or, after an
    # upgrade, the new protocol's).
    current = transport.get_protocol()
    if current is protocol:
        feed(data[allowed:])
    elif isinstance(current, asyncio.Protocol):
        current.data_received(data[allowed:])


def _refuse(transport: asyncio.Transport, server_state: ServerState, message: str) -> None:
    logger.warning("request head refused with 431: %s", message)
    transport.write(refusal(message, server_state.default_headers))
    transport.close()


class HttpToolsHeadLimitProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, counting the head as the parser reads it."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HeaderLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.counter = HeadCounter(limits)
        # Raw bytes of the unfinished head the parser holds; None while it reads a body.
        self.head_bytes: int | None = 0
        self.messages_ended = 0
        self.refused: HeadTooLarge | None = None
        self.refusal_due: str | None = None

    def data_received(self, data: bytes) -> None:
        _feed_within_limit(
            self,
            self.transport,
            data,
            head_read=lambda: self.head_bytes,
            limits=self.limits,
            feed=self._feed,
            refuse=self._refuse,
        )

    def _feed(self, data: bytes) -> None:
        if self.refusal_due is not None:
            return  # the rest of a read after a refusal waiting for an earlier answer
        in_head, ended = self.head_bytes is not None, self.messages_ended
        super().data_received(data)
        # A head that began with this read (or before it) holds all of it; one that
        # began after a pipelined request ended within it is not counted (see above).
        if in_head and self.head_bytes is not None and self.messages_ended == ended:
            self.head_bytes += len(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.counter.start()

    def on_url(self, url: bytes) -> None:
        self._count(lambda: self.counter.target(len(url)))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(lambda: self.counter.header(name, value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.head_bytes = 0
        self.messages_ended += 1

    def _count(self, check: Callable[[], None]) -> None:
        """Raising from a callback is how httptools lets one stop it mid-read; uvicorn
        then answers 400 through `send_400_response`, which answers 431 instead."""
        try:
            check()
        except HeadTooLarge as exc:
            self.refused = exc
            raise

    def send_400_response(self, msg: str) -> None:
        if self.refused is None:
            super().send_400_response(msg)
        else:
            self._refuse(str(self.refused))

    def _refuse(self, message: str) -> None:
        """At once, unless a pipelined request before this one is still being answered:
        then once its answer is out (httptools reads a pipelined head at once; h11
        keeps it unread until then)."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.refusal_due = message
            self.flow.pause_reading()
        else:
            _refuse(self.transport, self.server_state, message)

    def on_response_complete(self) -> None:
        if self.refusal_due is None or self.transport.is_closing():
            super().on_response_complete()
        else:
            self.server_state.total_requests += 1
            _refuse(self.transport, self.server_state, self.refusal_due)


class _LimitedConnection(h11.Connection):
    """h11's server side, with the parsed measures checked on each request head.

    h11 itself bounds an unfinished head (`max_incomplete_event_size`, the total limit)
    and says so with `error_status_hint=431`; that becomes a `HeadTooLarge` here, which
    uvicorn's event loop does not catch, so that the protocol answers it."""

    def __init__(self, limits: HeaderLimits) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=limits.total_bytes)
        self.limits = limits
        self.counter = HeadCounter(limits)

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        reading_head = self.their_state is h11.IDLE
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            if reading_head and exc.error_status_hint == STATUS:
                raise HeadTooLarge(self.limits.total_message()) from exc
            raise
        if isinstance(event, h11.Request):
            self.counter.start()
            self.counter.target(len(event.target))
            for name, value in event.headers.raw_items():
                self.counter.header(name, value)
        return event


class H11HeadLimitProtocol(H11Protocol):
    """uvicorn's h11 protocol, its connection replaced by `_LimitedConnection`."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HeaderLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.conn = _LimitedConnection(limits)

    def data_received(self, data: bytes) -> None:
        _feed_within_limit(
            self,
            self.transport,
            data,
            head_read=self._head_read,
            limits=self.limits,
            feed=super().data_received,
            refuse=self._refuse,
        )

    def _head_read(self) -> int | None:
        if self.conn.their_state is not h11.IDLE:
            return None
        return len(self.conn.trailing_data[0])

    def handle_events(self) -> None:
        # Also runs from a finished response, for a pipelined request read meanwhile.
        try:
            super().handle_events()
        except HeadTooLarge as exc:
            self._refuse(str(exc))

    def _refuse(self, message: str) -> None:
        _refuse(self.transport, self.server_state, message)


def uvicorn_protocol(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's `http` setting: LKPS's protocol for `LKPS_HTTP_IMPLEMENTATION`.

    uvicorn only ever calls `http` to make a protocol, with its own arguments; a partial
    carries the limits, and (unlike a class made here) pickles into worker processes."""
    protocol = (
        H11HeadLimitProtocol
        if settings.http_implementation == "h11"
        else HttpToolsHeadLimitProtocol
    )
    factory = functools.partial(protocol, limits=HeaderLimits.from_settings(settings))
    return cast("type[asyncio.Protocol]", factory)
