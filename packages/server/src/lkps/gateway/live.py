"""Presence and capacity from the live gateway connection, shared by every replica.

`LiveConnections` is the relay's `WorkerConnectionObserver`: each worker connection is a
row of `worker_connections` (lkps.store.connections) from the moment its register
reaches LiveKit until its socket closes, tagged with this replica. Session starts on
any replica read those rows (one statement): the agent is present while one of its
connections is registered and its replica's lease is alive, and at capacity when every
such connection is full or at/above the target load.

The replica's lease (`gateway_replicas`) is renewed by `renew()`, a background job run
every third of `lease_seconds`: a replica that dies without closing anything (SIGKILL,
a lost host) stops counting within `lease_seconds` of its last renewal. A graceful
shutdown deletes the replica's rows (`release()`).

Status writes are coalesced. livekit-agents reports every 2.5 s, with a load that
wanders (whole-machine CPU); most reports change nothing a session start reads. A
report is written at once when it changes the worker's verdict (can take a job: not
full and load below the target, LiveKit's own rule), and otherwise only when load moved
by at least `LOAD_STEP` or the job count changed, and then at most once per
`REFRESH_SECONDS` (what operators see in `GET /api/agents` is that fresh).

A connection lives no longer than its registration. `end_registrations` ends this
replica's connections of registrations that ended (the relay closes them: at once, or
once a draining worker's jobs are done); the replica where a registration ends calls it
at once (lkps.services), and every renewal asks the store which of this replica's
registrations ended since, so that every other replica follows within a third of the
lease (and a connection admitted just as its registration ended is caught too).

A write that fails (store unavailable) never fails the relay: the connection is marked
unsynced and the next lease renewal writes its whole state; a close whose delete failed
is retried there too. One lock orders those retries against closes, so a retried write
can never bring back the row of a connection that has closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import timedelta

from lkps.agents.presence import ConnectedWorker, reported_load, takes_jobs
from lkps.clock import Clock
from lkps.errors import ServiceUnavailable
from lkps.gateway.observer import ENDED_REGISTRATION, WorkerSession, WorkerStatus
from lkps.store import Database
from lkps.store import connections as store

log = logging.getLogger("lkps.gateway")

# See the module docstring: why, and tests/unit/gateway/test_live.py for the rate.
LOAD_STEP = 0.05
REFRESH_SECONDS = 30.0
# A replica whose lease lapsed this long ago is deleted (its rows count for nothing).
COLLECT_AFTER = timedelta(minutes=1)


def new_replica_id() -> str:
    """Readable in `lkps agents` (host and pid) and unique across restarts."""
    host = socket.gethostname().split(".")[0][:32] or "lkps"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass
class _Written:
    """What the store holds for one connection (as far as this replica knows)."""

    takes_jobs: bool
    load: float
    job_count: int
    at: float  # monotonic


class LiveConnections:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        replica_id: str,
        target_load: float,
        lease_seconds: float,
    ) -> None:
        self._db = db
        self._clock = clock
        self.replica_id = replica_id
        self._target_load = target_load
        self._lease = timedelta(seconds=lease_seconds)
        self.lease_seconds = lease_seconds
        self._workers: dict[str, ConnectedWorker] = {}
        self._written: dict[str, _Written] = {}
        self._unsynced: set[str] = set()
        self._closed_unsynced: set[str] = set()
        # Per connection: done (with the close reason) once its registration ended.
        self._ended: dict[str, asyncio.Future[str]] = {}
        self._sync = asyncio.Lock()
        self.writes = 0  # status rows written, for the coalescing measurement

    # The observer (lkps.gateway.observer.WorkerConnectionObserver).

    async def connected(self, worker: WorkerSession) -> None:
        now = self._clock.now()
        row = ConnectedWorker(
            agent_id=worker.agent_id.lower(),
            connection_id=worker.connection_id,
            registration_id=worker.registration_id,
            replica_id=self.replica_id,
            worker_id=None,
            connected_at=now,
            registered=False,
            available=True,
            load=0.0,
            job_count=0,
            updated_at=now,
        )
        self._workers[worker.connection_id] = row
        self._written[worker.connection_id] = _Written(True, 0.0, 0, self._clock.monotonic())
        await self._put(row)

    async def registered(self, worker: WorkerSession, worker_id: str) -> None:
        row = self._change(worker, worker_id=worker_id[:64], registered=True)
        if row is not None:
            await self._update(row, worker_id=row.worker_id, registered=True)

    async def status(self, worker: WorkerSession, status: WorkerStatus) -> None:
        load = reported_load(status.load)
        row = self._change(
            worker, available=status.available, load=load, job_count=max(0, status.job_count)
        )
        if row is None:
            return
        written = self._written[worker.connection_id]
        now = self._clock.monotonic()
        takes_jobs = self.takes_jobs(row)
        if takes_jobs == written.takes_jobs and not (
            (abs(load - written.load) >= LOAD_STEP or row.job_count != written.job_count)
            and now - written.at >= REFRESH_SECONDS
        ):
            return
        self._written[worker.connection_id] = _Written(takes_jobs, load, row.job_count, now)
        await self._update(
            row,
            available=row.available,
            load=row.load,
            job_count=row.job_count,
            updated_at=row.updated_at,
        )

    async def closed(self, worker: WorkerSession) -> None:
        connection_id = worker.connection_id
        self._workers.pop(connection_id, None)
        self._written.pop(connection_id, None)
        self._ended.pop(connection_id, None)
        self._unsynced.discard(connection_id)
        async with self._sync:
            try:
                await store.delete_connections(self._db, [connection_id])
            except ServiceUnavailable:
                log.warning("could not delete a closed worker connection; retrying")
                self._closed_unsynced.add(connection_id)

    def ended(self, worker: WorkerSession) -> asyncio.Future[str]:
        return self._end_of(worker.connection_id)

    def _end_of(self, connection_id: str) -> asyncio.Future[str]:
        future = self._ended.get(connection_id)
        if future is None:
            future = self._ended[connection_id] = asyncio.get_running_loop().create_future()
        return future

    def _ending(self, connection_id: str) -> bool:
        future = self._ended.get(connection_id)
        return future is not None and future.done()

    # The replica.

    def end_registrations(self, registration_ids: Collection[str]) -> int:
        """These registrations ended: their connections on this replica are closed, and
        never written again. How many there were."""
        ids, ended = set(registration_ids), 0
        for connection_id, row in self._workers.items():
            if row.registration_id in ids:
                future = self._end_of(connection_id)
                if not future.done():
                    future.set_result(ENDED_REGISTRATION)
                    ended += 1
        if ended:
            log.info("closing %d worker connection(s) of ended registrations", ended)
        return ended

    def takes_jobs(self, worker: ConnectedWorker) -> bool:
        """LiveKit's rule for offering a job to a worker (`agents.target_load`)."""
        return takes_jobs(worker.available, worker.load, self._target_load)

    def connections(self) -> list[ConnectedWorker]:
        return list(self._workers.values())

    async def start(self) -> None:
        """Take the lease before the first worker can connect."""
        await self.renew()

    async def renew(self) -> None:
        """The background job: extend the lease, then write what earlier writes could not
        (everything, when another replica had collected this one as dead)."""
        now = self._clock.now()
        kept = await store.renew_lease(self._db, self.replica_id, now, now + self._lease)
        if not kept:
            self._unsynced.update(self._workers)
        await self._end_ended_registrations()
        async with self._sync:
            if self._closed_unsynced:
                closed = set(self._closed_unsynced)
                await store.delete_connections(self._db, closed)
                self._closed_unsynced -= closed
            pending = [
                self._workers[c]
                for c in self._unsynced
                if c in self._workers and not self._ending(c)
            ]
            await store.put_connections(self._db, pending)
            self._unsynced.difference_update(row.connection_id for row in pending)
        await store.collect_dead_replicas(self._db, now - COLLECT_AFTER)

    async def _end_ended_registrations(self) -> None:
        """Registrations ended on another replica (or just before their worker was
        admitted here): end their connections, and delete any row they left."""
        registrations = {row.registration_id for row in self._workers.values()}
        if not registrations:
            return
        ended = await store.ended_registrations(self._db, registrations)
        if ended and self.end_registrations(ended):
            await store.delete_connections(
                self._db,
                [c for c, row in self._workers.items() if row.registration_id in ended],
            )

    async def release(self) -> None:
        """Graceful shutdown: this replica's connections stop counting now."""
        await store.release_replica(self._db, self.replica_id)

    def _change(self, worker: WorkerSession, **values: object) -> ConnectedWorker | None:
        row = self._workers.get(worker.connection_id)
        if row is None:
            return None
        row = replace(row, updated_at=self._clock.now(), **values)  # type: ignore[arg-type]
        self._workers[worker.connection_id] = row
        return row

    async def _put(self, row: ConnectedWorker) -> None:
        try:
            await store.put_connections(self._db, [row])
        except ServiceUnavailable:
            log.warning("could not record a worker connection; retrying")
            self._unsynced.add(row.connection_id)

    async def _update(self, row: ConnectedWorker, **values: object) -> None:
        self.writes += 1
        try:
            found = await store.update_connection(self._db, row.connection_id, **values)
        except ServiceUnavailable:
            log.warning("could not record a worker's state; retrying")
            self._unsynced.add(row.connection_id)
            return
        if not found:
            # No row: its first write failed (already queued for the next renewal), or
            # the registration was deregistered, which deleted it and must stay so.
            log.debug("no row for worker connection %s", row.connection_id)
