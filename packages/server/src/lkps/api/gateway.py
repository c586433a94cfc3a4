"""`/agent`: the LiveKit worker protocol, served by LKPS and relayed to LiveKit (see
`lkps.gateway`). livekit-agents dials `<URL it was given>/agent`, so the path is
LiveKit's own, at the root. This module only adapts Starlette's WebSocket to the
relay's socket shape and answers a refused handshake as LiveKit does (HTTP 401)."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, WebSocket
from starlette.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from lkps.api.middleware import new_request_id
from lkps.errors import ServiceUnavailable
from lkps.gateway import GatewayDenied
from lkps.gateway.sockets import Closed, Frame
from lkps.services import Services

router = APIRouter()


@router.websocket("/agent")
async def agent_gateway(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    gateway = services.gateway
    if gateway is None:
        await _deny(websocket, 404, "not_found", "The agent gateway is off (direct mode)")
        return
    client = websocket.client
    try:
        session = await gateway.admit(
            websocket.headers.get("authorization"), client.host if client else None
        )
    except GatewayDenied as exc:
        await _deny(websocket, 401, "unauthorized", str(exc))
        return
    except ServiceUnavailable as exc:
        await _deny(websocket, exc.status_code, exc.code, exc.message)
        return
    await websocket.accept()
    await gateway.serve(_StarletteSocket(websocket), session)


async def _deny(websocket: WebSocket, status: int, error: str, message: str) -> None:
    """An HTTP answer to the upgrade, with the contract's error body."""
    body = {"error": error, "message": message, "request_id": new_request_id()}
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else None
    await websocket.send_denial_response(JSONResponse(body, status_code=status, headers=headers))


class _StarletteSocket:
    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def receive(self) -> Frame:
        try:
            message = await self._websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return Closed(1006, "worker connection lost")
        if message["type"] == "websocket.disconnect":
            return Closed(int(message.get("code") or 1005), str(message.get("reason") or ""))
        data = message.get("bytes")
        if data is not None:
            return bytes(data)
        return str(message.get("text") or "")

    async def send(self, data: bytes) -> None:
        await self._websocket.send_bytes(data)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await self._websocket.close(code, reason)
