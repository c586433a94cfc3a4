"""The relay's LiveKit side (`AiohttpUpstream`) against a real WebSocket server on
127.0.0.1 in this process: every relayed worker holds one upstream socket for as long as
it is connected, so one process must hold many at once (bench/gateway_workers.py found
the 101st waiting for a free connection and timing out)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from lkps.gateway.sockets import RelaySocket
from lkps.gateway.upstream import AiohttpUpstream

pytestmark = pytest.mark.unit

# More than aiohttp's default connection pool (100 per session).
WORKERS = 130


@pytest.fixture
async def livekit_agent_endpoint() -> AsyncIterator[str]:
    """`ws://127.0.0.1:<free port>/agent`: accepts every socket and holds it open."""

    async def agent(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for _ in socket:
            pass
        return socket

    app = web.Application()
    app.router.add_get("/agent", agent)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"ws://127.0.0.1:{port}/agent"
    finally:
        await runner.cleanup()


async def test_one_process_holds_more_upstream_sockets_than_aiohttps_default_pool(
    livekit_agent_endpoint: str,
) -> None:
    upstream = AiohttpUpstream(max_message_bytes=1 << 20)
    try:
        sockets: list[RelaySocket] = await asyncio.wait_for(
            asyncio.gather(
                *(upstream.connect(livekit_agent_endpoint, "token") for _ in range(WORKERS))
            ),
            # Well under the connect timeout (10 s) a 101st socket would wait out.
            timeout=8,
        )
        assert len(sockets) == WORKERS
        await asyncio.gather(*(socket.close(1000, "done") for socket in sockets))
    finally:
        await upstream.aclose()
