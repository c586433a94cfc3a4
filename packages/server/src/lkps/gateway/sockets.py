"""The two small socket shapes the relay works on, so it runs the same over Starlette's
WebSocket (the worker side), aiohttp's client WebSocket (the LiveKit side), and the
in-memory pairs of the unit tests.

A socket yields whole messages: `bytes` (the protocol's binary protobuf frames), `str`
(a text frame, which the worker protocol never uses) or `Closed` once the peer closed or
vanished. Closing is idempotent and never raises: by the time the relay closes a side,
that side may already be gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Close codes (RFC 6455 §7.4.1).
NORMAL = 1000
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
# Codes a peer may report but nobody may send in a close frame.
_RESERVED = {1004: NORMAL, 1005: NORMAL, 1006: INTERNAL_ERROR, 1015: INTERNAL_ERROR}
_REASON_BYTES = 123  # a close frame's reason: 125 bytes less the code


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer closed (with its code and reason) or the connection was lost."""

    code: int
    reason: str = ""


Frame = bytes | str | Closed


class RelaySocket(Protocol):
    async def receive(self) -> Frame: ...

    async def send(self, data: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class UpstreamUnavailable(Exception):
    """LiveKit's `/agent` could not be reached or refused the connection."""


class UpstreamConnector(Protocol):
    async def connect(self, url: str, token: str) -> RelaySocket: ...


def sendable(code: int, reason: str) -> tuple[int, str]:
    """`code` and `reason` as a close frame may carry them: reserved codes (1005 "no
    status", 1006 "abnormal") become the nearest sendable one; the reason is cut to fit."""
    if code in _RESERVED:
        code = _RESERVED[code]
    elif not (1000 <= code <= 1014 or 3000 <= code <= 4999):
        code = INTERNAL_ERROR
    encoded = reason.encode()[:_REASON_BYTES]
    return code, encoded.decode(errors="ignore")
