"""Request ids: every response carries `X-Request-ID`, every log line the same id.

A well-formed id from the gateway is kept so one id follows a request end to end; any
other value is replaced, so nothing a caller sends is echoed unchecked.

Plain ASGI on raw header lists: this runs on every request, and Starlette's `Headers`
objects cost more than the work itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lkps.logs import request_id_var

REQUEST_ID_HEADER = "x-request-id"
_HEADER = REQUEST_ID_HEADER.encode("latin-1")
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_request_id() -> str:
    """32 lowercase hex characters from the OS's CSPRNG: the shape `uuid4().hex` had,
    at a quarter of its cost (a `UUID` object built and formatted on every request)."""
    return os.urandom(16).hex()


def request_id_of(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id", ""))


def with_request_id(
    headers: Iterable[tuple[bytes, bytes]], value: bytes
) -> list[tuple[bytes, bytes]]:
    """`headers` with one `x-request-id: value`: in place of the first one already
    there (any others dropped), else appended; as Starlette's `MutableHeaders` sets it."""
    result: list[tuple[bytes, bytes]] = []
    replaced = False
    for header in headers:
        if header[0] == _HEADER:
            if replaced:
                continue
            header = (_HEADER, value)
            replaced = True
        result.append(header)
    if not replaced:
        result.append((_HEADER, value))
    return result


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope["headers"]:
            if name == _HEADER:
                incoming = value.decode("latin-1")
                break
        request_id = incoming if _ACCEPTABLE_ID.match(incoming) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        header_value = request_id.encode("latin-1")
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_request_id(message["headers"], header_value)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
