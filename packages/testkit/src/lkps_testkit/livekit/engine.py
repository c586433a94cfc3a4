"""The double's server side, whichever way it is run (a thread in a test, or a process).

Everything here runs on the double's event loop. Tests reach it through `LiveKitDouble`
(or the HTTP endpoints), which hop onto that loop; they read `state` from anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from livekit.protocol import models

from lkps_testkit.livekit.background import Background
from lkps_testkit.livekit.records import DispatchRecord, ParticipantRecord
from lkps_testkit.livekit.rooms import RoomManager
from lkps_testkit.livekit.state import DoubleState
from lkps_testkit.livekit.tokens import KeyRing, VerifiedToken, join_target
from lkps_testkit.livekit.workers import WorkerRegistry

SWEEP_INTERVAL = 0.25  # LiveKit checks idle rooms every few seconds; tests want less


class Engine:
    def __init__(
        self,
        keys: KeyRing,
        *,
        close_workers_on_token_expiry: bool = True,
        assignment_timeout: float = 10.0,
    ) -> None:
        self.keys = keys
        self.state = DoubleState()
        self.url = ""  # ws://host:port, known once the socket is bound
        self._background = Background()
        self.workers = WorkerRegistry(
            self.state,
            keys,
            self._background,
            url=lambda: self.url,
            assignment_timeout=assignment_timeout,
            close_on_token_expiry=close_workers_on_token_expiry,
        )
        self.rooms = RoomManager(self.state, launch=self._launch, terminate=self._terminate)

    def _launch(self, dispatch: DispatchRecord, room: models.Room) -> None:
        self._background.spawn(self.workers.launch(dispatch, room), name=f"launch {dispatch.id}")

    def _terminate(self, job_id: str) -> None:
        self._background.spawn(self.workers.terminate(job_id), name=f"terminate {job_id}")

    async def start(self) -> None:
        self._background.spawn(self._sweep_forever(), name="room sweeper")

    async def stop(self) -> None:
        await self.workers.close(reason="server stopped")
        await self._background.aclose()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.rooms.sweep()

    def join_verified(
        self,
        token: VerifiedToken,
        room: str | None = None,
        *,
        via: str = "join",
        metadata: str = "",
        attributes: Mapping[str, str] | None = None,
        sdk: str = "",
    ) -> ParticipantRecord:
        """Check the token's join grants and add its participant (TokenError,
        ServiceError when LiveKit would refuse)."""
        room_name = join_target(token, room)
        return self.rooms.join(
            token, room_name, via=via, metadata=metadata, attributes=attributes, sdk=sdk
        )

    async def join(self, raw_token: str, room: str | None = None) -> ParticipantRecord:
        return self.join_verified(self.keys.verify(raw_token), room)

    async def leave(self, room: str, identity: str) -> ParticipantRecord:
        return self.rooms.leave(room, identity, "CLIENT_INITIATED")

    async def close_workers(self, agent_name: str | None = None) -> int:
        return await self.workers.close(agent_name)
