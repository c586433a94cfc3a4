"""Asking LiveKit to dispatch an agent into a room (Twirp `AgentDispatchService`), for
the one retry after a no-show, and whether a job of the agent is already under way there
(an agent that is slow to join must not get a second job beside the first)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from livekit.api import CreateAgentDispatchRequest, LiveKitAPI
from livekit.protocol.agent import JobStatus


class AgentDispatcher(Protocol):
    async def dispatch(self, *, agent_name: str, room: str, metadata: str) -> str:
        """The dispatch's id; raises on any failure."""
        ...

    async def running_job(self, *, agent_name: str, room: str) -> str | None:
        """The id of a job of `agent_name` in `room` that a worker holds and that has not
        ended, or None; raises on any failure."""
        ...

    async def aclose(self) -> None: ...


# A job a worker took and has not finished: its agent is on its way into the room.
_UNDER_WAY = frozenset({JobStatus.JS_PENDING, JobStatus.JS_RUNNING})


class LiveKitDispatcher:
    """livekit-api's client, made on first use (it needs a running event loop)."""

    def __init__(self, url: str, api_key: str, api_secret: str, *, timeout: float) -> None:
        self._url = url
        self._key = api_key
        self._secret = api_secret
        self._timeout = timeout
        self._api: LiveKitAPI | None = None

    async def dispatch(self, *, agent_name: str, room: str, metadata: str) -> str:
        async with asyncio.timeout(self._timeout):
            created = await self._client().agent_dispatch.create_dispatch(
                CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
            )
        return str(created.id)

    async def running_job(self, *, agent_name: str, room: str) -> str | None:
        async with asyncio.timeout(self._timeout):
            dispatches = await self._client().agent_dispatch.list_dispatch(room)
        for dispatch in dispatches:
            if dispatch.agent_name != agent_name:
                continue
            for job in dispatch.state.jobs:
                if job.state.worker_id and job.state.status in _UNDER_WAY:
                    return str(job.id)
        return None

    def _client(self) -> LiveKitAPI:
        if self._api is None:
            self._api = LiveKitAPI(self._url, self._key, self._secret)
        return self._api

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None
