"""Twirp, the way LiveKit's Go server serves it (twirp v8 defaults).

`POST /twirp/<package>.<Service>/<Method>` with a protobuf (`application/protobuf`)
or JSON (`application/json`) body; the answer comes in the request's encoding. JSON
uses the proto field names and prints unset fields, and unknown fields are ignored on
input. Errors are always JSON, `{"code": ..., "msg": ...}`, with the code's HTTP status.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToJson, Parse, ParseError
from google.protobuf.message import DecodeError, Message

from lkps_testkit.livekit.background import logger
from lkps_testkit.livekit.errors import ServiceError
from lkps_testkit.livekit.tokens import VerifiedToken

PREFIX = "/twirp/"
PROTOBUF = "application/protobuf"
JSON = "application/json"


@dataclass(frozen=True)
class Method:
    request: type[Message]
    handle: Callable[[Any, VerifiedToken | None], Message]


Service = Mapping[str, Method]


def error_response(error: ServiceError) -> web.Response:
    return web.Response(status=error.status, text=json.dumps(error.body()), content_type=JSON)


class TwirpRouter:
    def __init__(self, services: Mapping[str, Service]) -> None:
        self._services = services

    async def handle(self, request: web.Request, token: VerifiedToken | None) -> web.StreamResponse:
        try:
            return await self._handle(request, token)
        except ServiceError as error:
            return error_response(error)
        except Exception as error:  # a bug in the double: say so the Twirp way
            logger.exception("Twirp %s failed", request.path)
            return error_response(ServiceError("internal", f"{type(error).__name__}: {error}"))

    async def _handle(self, request: web.Request, token: VerifiedToken | None) -> web.Response:
        if request.method != "POST":
            raise ServiceError(
                "bad_route", f"unsupported method {request.method} (only POST is allowed)"
            )
        service, _, name = request.path.removeprefix(PREFIX).partition("/")
        method = self._services.get(service, {}).get(name)
        if method is None:
            raise ServiceError("bad_route", f"no handler for path {request.path!r}")
        content_type = request.content_type
        if content_type not in (PROTOBUF, JSON):
            raise ServiceError("bad_route", f"unexpected Content-Type: {content_type!r}")
        body = await request.read()
        message = method.request()
        try:
            if content_type == JSON:
                Parse(body.decode(), message, ignore_unknown_fields=True)
            else:
                message.ParseFromString(body)
        except (ParseError, DecodeError, UnicodeDecodeError):
            raise ServiceError(
                "malformed", f"the {content_type} request could not be decoded"
            ) from None
        answer = method.handle(message, token)
        if content_type == JSON:
            text = MessageToJson(
                answer, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            return web.Response(text=text, content_type=JSON)
        return web.Response(body=answer.SerializeToString(), content_type=PROTOBUF)
