"""The double's HTTP surface: LiveKit's endpoints, plus `/_double/*` for tests.

LiveKit's endpoints: `/agent` (workers), `/rtc` and `/rtc/v1` (signalling, up to the
join), their `validate` twins, and `/twirp/livekit.RoomService/*` and
`/twirp/livekit.AgentDispatchService/*`. As in LiveKit, any token a request carries
(header or `access_token`) is verified before the endpoint runs, and a bad one is
refused with a plain-text 401; a request without a token goes on, and each endpoint
decides what it needs.

The `/_double/*` endpoints let tests in other processes (or a browser) drive and
inspect the double: `POST /_double/join`, `POST /_double/leave`,
`POST /_double/close-workers` and `GET /_double/state`. They take no LiveKit token
in a header: they are test controls, not LiveKit.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from lkps_testkit.livekit.engine import Engine
from lkps_testkit.livekit.errors import HttpRefusal, ServiceError
from lkps_testkit.livekit.records import to_json
from lkps_testkit.livekit.rtc import CLOSE_TIMEOUT, signal, validate
from lkps_testkit.livekit.services import AgentDispatchService, RoomService
from lkps_testkit.livekit.tokens import NO_ROOM_PERMISSION, VerifiedToken, bearer_token
from lkps_testkit.livekit.twirp import PREFIX, TwirpRouter

CONTROL_PREFIX = "/_double/"
SHUTDOWN_TIMEOUT = 3.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TokenHandler = Callable[[web.Request, VerifiedToken | None], Awaitable[web.StreamResponse]]


def build_app(engine: Engine) -> web.Application:
    def authenticated(handler: TokenHandler) -> Handler:
        """Verify the token a request carries, if any, before the endpoint sees it
        (LiveKit's `APIKeyAuthMiddleware`, in front of every LiveKit endpoint)."""

        async def route(request: web.Request) -> web.StreamResponse:
            try:
                raw = bearer_token(
                    request.headers.get("Authorization"), request.query.get("access_token")
                )
                token = engine.keys.verify(raw) if raw else None
            except HttpRefusal as refusal:
                return web.Response(status=refusal.status, text=refusal.message)
            return await handler(request, token)

        return route

    twirp = TwirpRouter(
        {
            "livekit.RoomService": RoomService(engine.rooms, engine.state).methods(),
            "livekit.AgentDispatchService": AgentDispatchService(
                engine.rooms, engine.state
            ).methods(),
        }
    )

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def agent_socket(request: web.Request, token: VerifiedToken | None) -> web.StreamResponse:
        ws = web.WebSocketResponse(timeout=CLOSE_TIMEOUT)
        if not ws.can_prepare(request).ok:
            return web.Response(status=404)  # LiveKit answers a plain GET with 404
        if token is None or not token.grant("agent"):
            return web.Response(status=401, text=NO_ROOM_PERMISSION)
        await ws.prepare(request)
        await engine.workers.serve(ws, token)
        return ws

    def rtc_route(v1: bool, check_only: bool) -> Handler:
        async def route(request: web.Request, token: VerifiedToken | None) -> web.StreamResponse:
            if check_only:
                return await validate(request, token, v1=v1)
            return await signal(request, token, engine, v1=v1)

        return authenticated(route)

    app = web.Application()
    app.router.add_get("/", health)
    app.router.add_get("/agent", authenticated(agent_socket))
    app.router.add_get("/rtc", rtc_route(v1=False, check_only=False))
    app.router.add_get("/rtc/validate", rtc_route(v1=False, check_only=True))
    app.router.add_get("/rtc/v1", rtc_route(v1=True, check_only=False))
    app.router.add_get("/rtc/v1/validate", rtc_route(v1=True, check_only=True))
    app.router.add_route("*", PREFIX + "{method:.+}", authenticated(twirp.handle))
    _add_controls(app, engine)
    return app


def _add_controls(app: web.Application, engine: Engine) -> None:
    async def state(_: web.Request) -> web.Response:
        return web.json_response(engine.state.snapshot())

    async def join(request: web.Request) -> web.Response:
        body = await _json_body(request)
        room = body.get("room")
        participant = await engine.join(
            str(body.get("token", "")), room if isinstance(room, str) else None
        )
        room = engine.state.room(participant.room)
        return web.json_response(
            {"participant": to_json(participant), "room": to_json(room) if room else None}
        )

    async def leave(request: web.Request) -> web.Response:
        body = await _json_body(request)
        participant = await engine.leave(str(body.get("room", "")), str(body.get("identity", "")))
        return web.json_response({"participant": to_json(participant)})

    async def close_workers(request: web.Request) -> web.Response:
        body = await _json_body(request)
        agent_name = body.get("agent_name")
        closed = await engine.close_workers(None if agent_name is None else str(agent_name))
        return web.json_response({"closed": closed})

    def refusals(handler: Handler) -> Handler:
        async def route(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except HttpRefusal as refusal:
                return web.json_response({"error": refusal.message}, status=refusal.status)
            except ServiceError as error:
                return web.json_response(
                    {"error": error.message, "code": error.code}, status=error.status
                )

        return route

    app.router.add_get(CONTROL_PREFIX + "state", state)
    app.router.add_post(CONTROL_PREFIX + "join", refusals(join))
    app.router.add_post(CONTROL_PREFIX + "leave", refusals(leave))
    app.router.add_post(CONTROL_PREFIX + "close-workers", refusals(close_workers))


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json() if request.can_read_body else {}
    except json.JSONDecodeError:
        raise HttpRefusal(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HttpRefusal(400, "the body must be a JSON object")
    return body


async def serve(engine: Engine, sock: socket.socket) -> web.AppRunner:
    """Serve the double on an already bound socket; `runner.cleanup()` stops it."""
    host, port = sock.getsockname()[:2]
    engine.url = f"ws://{host}:{port}"
    runner = web.AppRunner(build_app(engine), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    await engine.start()
    return runner


async def shutdown(engine: Engine, runner: web.AppRunner) -> None:
    """Close the workers' sockets (they will try to reconnect, and fail), then stop."""
    await engine.stop()
    await runner.cleanup()
