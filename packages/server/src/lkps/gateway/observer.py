"""What the relay tells the rest of LKPS about worker connections.

`lkps.gateway.live.LiveConnections` implements it: presence follows the live gateway
connection, and capacity the status each worker reports. It also tells the relay when a
connection must end: its registration ended (deregistered, or expired), so its
credential no longer holds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol
from uuid import uuid4


@dataclass(frozen=True, slots=True)
class WorkerSession:
    """One authenticated worker connection: who it is and where it came from."""

    agent_id: str
    registration_id: str
    client_ip: str | None
    connection_id: str = field(default_factory=lambda: uuid4().hex)


# Why a connection ends when its registration does: the worker is told this, as a
# worker whose credential names an ended registration is at the handshake.
ENDED_REGISTRATION = "the registration this credential was issued for has ended; register again"


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """What a worker's `UpdateWorkerStatus` said: `available` is LiveKit's
    WS_AVAILABLE, `load` in [0, 1]."""

    available: bool
    load: float
    job_count: int


class WorkerConnectionObserver(Protocol):
    async def connected(self, worker: WorkerSession) -> None:
        """The worker's register was accepted by the gateway and sent to LiveKit."""

    async def registered(self, worker: WorkerSession, worker_id: str) -> None:
        """LiveKit answered the register: the worker can now be dispatched jobs."""

    async def status(self, worker: WorkerSession, status: WorkerStatus) -> None:
        """The worker reported its status (every few seconds)."""

    async def closed(self, worker: WorkerSession) -> None:
        """The connection ended, whichever side ended it. Called once, after
        `connected`, also when the relay was cancelled."""

    def ended(self, worker: WorkerSession) -> asyncio.Future[str]:
        """Done, with the reason to close it with, once LKPS ends this connection (its
        registration ended); never done otherwise. Asked once, after `connected`."""
        ...


class NoObserver:
    """Observes nothing: for a relay whose connections count for nothing (tests)."""

    async def connected(self, worker: WorkerSession) -> None:
        return None

    async def registered(self, worker: WorkerSession, worker_id: str) -> None:
        return None

    async def status(self, worker: WorkerSession, status: WorkerStatus) -> None:
        return None

    async def closed(self, worker: WorkerSession) -> None:
        return None

    def ended(self, worker: WorkerSession) -> asyncio.Future[str]:
        return asyncio.get_running_loop().create_future()
