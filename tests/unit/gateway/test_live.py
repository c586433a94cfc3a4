"""`LiveConnections`, the gateway's observer, against a real store: which status reports
it writes (and how few), that a failed write never fails the relay and is made good by
the next lease renewal, and that a closed connection's row is never brought back."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from lkps.agents import AgentRegistry
from lkps.agents.presence import ConnectedWorker
from lkps.gateway import WorkerSession, WorkerStatus
from lkps.gateway.live import REFRESH_SECONDS, LiveConnections
from lkps.gateway.observer import ENDED_REGISTRATION
from lkps.store import Database
from lkps.store.connections import live_workers
from lkps.store.migrate import upgrade_async
from tests.backends import TestDatabase
from tests.conftest import AGENT, FakeClock

pytestmark = pytest.mark.unit

REGISTRATION = "0f0f0f0f-0000-4000-8000-000000000001"
# livekit-agents' UPDATE_STATUS_INTERVAL.
REPORT_EVERY = 2.5


@pytest.fixture
async def db(database: TestDatabase) -> AsyncIterator[Database]:
    handle = Database.from_url(database.url, pool_size=2)
    yield handle
    await handle.dispose()


def live(db: Database, clock: FakeClock) -> LiveConnections:
    return LiveConnections(db, clock, replica_id="replica-a", target_load=0.7, lease_seconds=6.0)


async def stored(db: Database, clock: FakeClock) -> list[ConnectedWorker]:
    return await live_workers(db, clock.now())


async def pass_time(connections: LiveConnections, clock: FakeClock, seconds: float) -> None:
    """Let `seconds` pass with the lease renewed as the background job renews it (every
    third of the lease), so the replica's rows keep counting."""
    step = connections.lease_seconds / 3
    while seconds > 0:
        clock.advance(min(step, seconds))
        seconds -= step
        await connections.renew()


async def connect(connections: LiveConnections) -> WorkerSession:
    worker = WorkerSession(AGENT, REGISTRATION, "203.0.113.9")
    await connections.connected(worker)
    await connections.registered(worker, "AW_one")
    return worker


async def test_a_change_of_verdict_is_written_at_once_small_changes_wait(
    db: Database, clock: FakeClock
) -> None:
    connections = live(db, clock)
    await connections.start()
    worker = await connect(connections)
    [row] = await stored(db, clock)
    assert row.registered and row.worker_id == "AW_one" and row.load == 0.0

    await connections.status(worker, WorkerStatus(available=True, load=0.75, job_count=1))
    assert (await stored(db, clock))[0].load == 0.75  # can no longer take a job: at once
    await connections.status(worker, WorkerStatus(available=True, load=0.9, job_count=1))
    assert (await stored(db, clock))[0].load == 0.75  # still full: waits for the refresh
    await connections.status(worker, WorkerStatus(available=True, load=0.2, job_count=1))
    assert (await stored(db, clock))[0].load == 0.2  # takes jobs again: at once
    await connections.status(worker, WorkerStatus(available=False, load=0.2, job_count=1))
    assert (await stored(db, clock))[0].available is False  # WS_FULL: at once

    await connections.status(worker, WorkerStatus(available=True, load=0.2, job_count=1))
    await pass_time(connections, clock, REFRESH_SECONDS / 2)
    await connections.status(worker, WorkerStatus(available=True, load=0.4, job_count=3))
    assert (await stored(db, clock))[0].job_count == 1  # changed, but written recently
    await pass_time(connections, clock, REFRESH_SECONDS / 2)
    await connections.status(worker, WorkerStatus(available=True, load=0.41, job_count=3))
    await connections.renew()  # as the background job does, every third of the lease
    [row] = await stored(db, clock)
    assert row.load == pytest.approx(0.41) and row.job_count == 3

    await connections.closed(worker)
    assert await stored(db, clock) == []


async def test_how_many_reports_are_written(db: Database, clock: FakeClock) -> None:
    """The figure behind the coalescing rule (docs/configuration.md): a worker reporting
    every 2.5 s for an hour, its load a busy host's CPU (a random walk around 0.4, now and
    then crossing the target)."""
    connections = live(db, clock)
    await connections.start()
    worker = await connect(connections)
    rng = random.Random(11)
    load, reports = 0.4, int(3600 / REPORT_EVERY)
    for _ in range(reports):
        clock.advance(REPORT_EVERY)
        load = min(1.0, max(0.0, load + rng.gauss(0, 0.04) + (0.4 - load) * 0.05))
        jobs = 1 if load > 0.5 else 0
        await connections.status(worker, WorkerStatus(available=True, load=load, job_count=jobs))
    ratio = connections.writes / reports
    print(f"\n{reports} status reports, {connections.writes} written ({ratio:.1%})")
    assert connections.writes < reports / 4
    await connections.renew()
    [row] = await stored(db, clock)
    assert connections.takes_jobs(row) == (load < 0.7)  # the verdict is always current


@pytest.mark.backends("sqlite")
async def test_a_failed_write_never_fails_the_relay_and_is_made_good(
    empty_database: TestDatabase, clock: FakeClock
) -> None:
    db = Database.from_url(empty_database.url, pool_size=2)
    try:
        connections = live(db, clock)
        worker = await connect(connections)  # no tables: every write fails, none raises
        await connections.status(worker, WorkerStatus(available=True, load=0.9, job_count=2))
        gone = WorkerSession(AGENT, REGISTRATION, None)
        await connections.connected(gone)
        await connections.closed(gone)

        await upgrade_async(empty_database.url)  # the store is back
        await connections.renew()
        [row] = await stored(db, clock)
        assert row.connection_id == worker.connection_id  # the closed one stays gone
        assert row.registered and row.load == pytest.approx(0.9) and row.job_count == 2
    finally:
        await db.dispose()


async def test_a_replica_collected_as_dead_writes_its_connections_again(
    db: Database, clock: FakeClock
) -> None:
    """A replica stalled past its lease (and a minute more) was deleted by another; its
    next renewal finds no row of its own and writes everything it holds again."""
    connections = live(db, clock)
    await connections.start()
    await connect(connections)
    other = LiveConnections(db, clock, replica_id="replica-b", target_load=0.7, lease_seconds=6)
    clock.advance(120)
    await other.renew()  # collects replica-a and its rows
    assert await stored(db, clock) == []
    await connections.renew()
    assert [row.replica_id for row in await stored(db, clock)] == ["replica-a"]


async def test_release_deletes_the_replicas_rows(db: Database, clock: FakeClock) -> None:
    connections = live(db, clock)
    await connections.start()
    await connect(connections)
    await connections.release()
    assert await stored(db, clock) == []


async def test_a_renewal_ends_the_connections_of_ended_registrations(
    db: Database, clock: FakeClock
) -> None:
    """A registration ended on another replica (deregistered, or expired): this
    replica's next renewal ends its connections (the relay closes them), deletes any row
    they left (a worker admitted just as its registration ended), and never writes those
    rows again, even when it writes everything it holds anew."""
    registry = AgentRegistry(db, clock, presence_ttl=90, default_enforce=True, gateway=True)
    ending, staying = [await registry.register(AGENT) for _ in range(2)]
    connections = live(db, clock)
    await connections.start()
    workers = [WorkerSession(AGENT, r.registration_id, None) for r in (ending, staying)]
    for worker in workers:
        await connections.connected(worker)
        await connections.registered(worker, "AW_" + worker.registration_id[:8])
    ended = [connections.ended(worker) for worker in workers]
    await connections.renew()
    assert not any(future.done() for future in ended)

    await registry.deregister(AGENT, ending.registration_id)  # on another replica
    late = WorkerSession(AGENT, ending.registration_id, None)  # admitted just before
    await connections.connected(late)
    await connections.registered(late, "AW_late")
    assert len(await stored(db, clock)) == 2  # the late one counts, until the renewal
    await connections.renew()
    assert ended[0].result() == ENDED_REGISTRATION
    assert connections.ended(late).result() == ENDED_REGISTRATION
    assert not ended[1].done()
    assert [row.registration_id for row in await stored(db, clock)] == [staying.registration_id]

    # Collected as dead by another replica: it writes what it holds again, but not the
    # connections whose registration ended (their sockets are closing, or draining).
    other = LiveConnections(db, clock, replica_id="replica-b", target_load=0.7, lease_seconds=6)
    clock.advance(120)
    await other.renew()
    await connections.renew()
    assert [row.registration_id for row in await stored(db, clock)] == [staying.registration_id]


async def test_ending_is_told_at_once_and_once(db: Database, clock: FakeClock) -> None:
    connections = live(db, clock)
    worker = await connect(connections)
    assert connections.end_registrations(["another-registration"]) == 0
    assert connections.end_registrations([REGISTRATION]) == 1
    assert connections.ended(worker).result() == ENDED_REGISTRATION
    assert connections.end_registrations([REGISTRATION]) == 0  # already ending
    await connections.closed(worker)
    assert connections.end_registrations([REGISTRATION]) == 0
