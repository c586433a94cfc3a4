"""Asking LiveKit to dispatch an agent into a room (Twirp `AgentDispatchService`), for
the one retry after a no-show."""

from __future__ import annotations

import asyncio
from typing import Protocol

from livekit.api import CreateAgentDispatchRequest, LiveKitAPI


class AgentDispatcher(Protocol):
    async def dispatch(self, *, agent_name: str, room: str, metadata: str) -> str:
        """The dispatch's id; raises on any failure."""
        ...

    async def aclose(self) -> None: ...


class LiveKitDispatcher:
    """livekit-api's client, made on first use (it needs a running event loop)."""

    def __init__(self, url: str, api_key: str, api_secret: str, *, timeout: float) -> None:
        self._url = url
        self._key = api_key
        self._secret = api_secret
        self._timeout = timeout
        self._api: LiveKitAPI | None = None

    async def dispatch(self, *, agent_name: str, room: str, metadata: str) -> str:
        if self._api is None:
            self._api = LiveKitAPI(self._url, self._key, self._secret)
        async with asyncio.timeout(self._timeout):
            created = await self._api.agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
            )
        return str(created.id)

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None
