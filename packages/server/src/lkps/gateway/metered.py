"""The gateway's worker connections as Prometheus gauges: how many workers each agent has
on this replica, by the status they last reported, and their summed load.

`MeteredObserver` wraps the relay's observer (`LiveConnections`), so the relay and
presence stay as they are. A worker reports its status every few seconds, so the hot
path is one dictionary lookup per status: each connection holds its gauge children
(looked up once, when it connects) and the shared load total of its agent; a gauge is
written only when the status class changes or the load moves by a thousandth. Loads are
summed as whole thousandths, so a closed connection takes back exactly what it added.

A connection counts from the gateway relaying its register until it closes. Its status
is `available`, `full` (WS_FULL, or load at or above LiveKit's target: the rule
presence applies, `takes_jobs`) or `draining` (its registration ended while jobs were
running: the relay keeps it until they are done, as WS_FULL to LiveKit).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Gauge

from lkps import metrics
from lkps.agents.presence import reported_load, takes_jobs
from lkps.gateway.observer import WorkerConnectionObserver, WorkerSession, WorkerStatus

WorkerState = Literal["available", "full", "draining"]
STATES: tuple[WorkerState, ...] = ("available", "full", "draining")
# Loads are summed in thousandths (exact integers), and written when they move by one.
LOAD_SCALE = 1000


@dataclass(slots=True)
class _AgentLoad:
    """One agent's summed load on this process, and its gauge child."""

    gauge: Gauge
    thousandths: int = 0

    def add(self, delta: int) -> None:
        self.thousandths += delta
        self.gauge.set(self.thousandths / LOAD_SCALE)


@dataclass(slots=True)
class _Connection:
    """One worker connection's part in the gauges."""

    states: dict[WorkerState, Gauge]
    load: _AgentLoad
    state: WorkerState = "available"
    thousandths: int = 0
    open: bool = True

    def move(self, state: WorkerState) -> None:
        if state != self.state and self.open:
            self.states[self.state].dec()
            self.states[state].inc()
            self.state = state

    def report(self, status: WorkerStatus, target_load: float) -> None:
        load = reported_load(status.load)
        if self.state != "draining":  # once its registration ended, until it closes
            self.move("available" if takes_jobs(status.available, load, target_load) else "full")
        thousandths = round(load * LOAD_SCALE)
        if thousandths != self.thousandths:
            self.load.add(thousandths - self.thousandths)
            self.thousandths = thousandths

    def registration_ended(self, ended: asyncio.Future[str]) -> None:
        if not ended.cancelled():
            self.move("draining")

    def close(self) -> None:
        if self.open:
            self.states[self.state].dec()
            self.load.add(-self.thousandths)
            self.open = False


class MeteredObserver:
    """A `WorkerConnectionObserver` that keeps `lkps_gateway_workers` and
    `lkps_gateway_worker_load` and passes every call on to `inner`."""

    def __init__(self, inner: WorkerConnectionObserver, *, target_load: float) -> None:
        self._inner = inner
        self._target_load = target_load
        self._connections: dict[str, _Connection] = {}
        self._agents: dict[str, _AgentLoad] = {}

    async def connected(self, worker: WorkerSession) -> None:
        await self._inner.connected(worker)  # if it fails, the relay never calls closed
        agent = worker.agent_id.lower()
        load = self._agents.get(agent)
        if load is None:
            load = self._agents[agent] = _AgentLoad(metrics.GATEWAY_WORKER_LOAD.labels(agent))
        connection = _Connection(
            states={state: metrics.GATEWAY_WORKERS.labels(agent, state) for state in STATES},
            load=load,
        )
        connection.states["available"].inc()
        self._connections[worker.connection_id] = connection

    async def registered(self, worker: WorkerSession, worker_id: str) -> None:
        await self._inner.registered(worker, worker_id)

    async def status(self, worker: WorkerSession, status: WorkerStatus) -> None:
        connection = self._connections.get(worker.connection_id)
        if connection is not None:
            connection.report(status, self._target_load)
        await self._inner.status(worker, status)

    async def closed(self, worker: WorkerSession) -> None:
        connection = self._connections.pop(worker.connection_id, None)
        if connection is not None:
            connection.close()
        await self._inner.closed(worker)

    def ended(self, worker: WorkerSession) -> asyncio.Future[str]:
        future = self._inner.ended(worker)
        connection = self._connections.get(worker.connection_id)
        if connection is not None:
            # Draining from the moment the registration ends, not from the next status
            # (a connection without jobs is closed at once: then this changes nothing).
            future.add_done_callback(connection.registration_ended)
        return future
