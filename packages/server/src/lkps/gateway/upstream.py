"""The LiveKit side of the relay: LiveKit's `/agent`, dialled with aiohttp (which
livekit-api brings) and a worker token LKPS minted for this one connection."""

from __future__ import annotations

import asyncio

import aiohttp

from lkps.gateway.sockets import (
    INTERNAL_ERROR,
    Closed,
    Frame,
    RelaySocket,
    UpstreamUnavailable,
)

CONNECT_TIMEOUT_SECONDS = 10.0
# Pings keep idle connections open through load balancers, and notice a dead LiveKit.
HEARTBEAT_SECONDS = 30.0


class AiohttpUpstream:
    """Opens LiveKit `/agent` sockets on one shared aiohttp session."""

    def __init__(self, *, max_message_bytes: int) -> None:
        self._max_bytes = max_message_bytes
        self._session: aiohttp.ClientSession | None = None

    async def connect(self, url: str, token: str) -> RelaySocket:
        if self._session is None:
            # No pool limit: each relayed worker holds its LiveKit socket for as long as
            # it is connected, so aiohttp's default (100 connections per session) made
            # the 101st worker on a process wait for one to close and time out.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                socket = await self._session.ws_connect(
                    url,
                    headers={"Authorization": f"Bearer {token}"},
                    max_msg_size=self._max_bytes,
                    heartbeat=HEARTBEAT_SECONDS,
                    autoping=True,
                )
        except aiohttp.WSServerHandshakeError as exc:
            raise UpstreamUnavailable(f"LiveKit answered {exc.status}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise UpstreamUnavailable(type(exc).__name__) from None
        return _AiohttpSocket(socket)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _AiohttpSocket:
    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket

    async def receive(self) -> Frame:
        message = await self._socket.receive()
        if message.type is aiohttp.WSMsgType.BINARY:
            return bytes(message.data)
        if message.type is aiohttp.WSMsgType.TEXT:
            return str(message.data)
        if message.type is aiohttp.WSMsgType.CLOSE:
            return Closed(int(message.data), str(message.extra or ""))
        return Closed(self._socket.close_code or INTERNAL_ERROR, "LiveKit connection lost")

    async def send(self, data: bytes) -> None:
        await self._socket.send_bytes(data)

    async def close(self, code: int, reason: str) -> None:
        await self._socket.close(code=code, message=reason.encode())
