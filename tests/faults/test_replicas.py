"""Scale-out: three `lkps serve` replicas on one PostgreSQL database behave as one
service (presence, deregistration, one audit chain), and keep doing so when one of them
is killed outright.

Both tests use one fleet (starting three replicas is most of their cost on a small
machine), on a database of its own. The first finds it fresh; the second kills a
replica, so it runs last; each counts only the records its own requests wrote."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lkps.audit import AuditRecord
from lkps.authorization.file import write_authorization_file
from lkps_testkit import EntraDouble, ServerThread
from tests.backends import PostgresServer
from tests.conftest import (
    AGENT,
    AGENT_2,
    LIVEKIT_SECRET,
)
from tests.faults.conftest import BOTH_AGENTS, Identities, replica_environment
from tests.faults.logs import assert_clean, check_logs
from tests.faults.traffic import (
    DEREGISTER,
    HEARTBEAT,
    REGISTER,
    SESSION_START,
    Traffic,
    answered_records,
    check_error_body,
    granted_sessions_without_record,
    http_client,
    keep_going,
    read_audit,
    records_nobody_saw,
    rejections_recorded,
    spread,
)
from tests.processes import Replica, replicas, run_lkps

pytestmark = pytest.mark.e2e

STARTERS = 6  # concurrent session-start clients


@dataclass
class Fleet:
    database_url: str
    envs: dict[str, dict[str, str]]
    replicas: dict[str, Replica]
    workdir: Path

    def log_marks(self) -> dict[str, int]:
        return {name: replica.log_size() for name, replica in self.replicas.items()}

    def logs_since(self, marks: dict[str, int]) -> dict[str, str]:
        return {name: r.log_text(since=marks[name]) for name, r in self.replicas.items()}

    async def records_after(self, seq: int) -> list[AuditRecord]:
        return [r for r in await read_audit(self.database_url) if r.seq > seq]

    async def head(self) -> int:
        records = await read_audit(self.database_url)
        return records[-1].seq if records else 0

    def verify_chain(self) -> str:
        """`lkps audit verify` against the fleet's database: its one line, exit 0."""
        result = run_lkps("audit", "verify", env=self.envs["r1"], cwd=self.workdir)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.strip()


@pytest.fixture(scope="module")
def _fleet(
    postgres: PostgresServer,
    _entra_session: EntraDouble,
    entra_server: ServerThread,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """Replicas r1, r2 (two worker processes) and r3 on a fresh database."""
    workdir = tmp_path_factory.mktemp("fleet")
    authz = workdir / "authz.json"
    write_authorization_file(authz, BOTH_AGENTS)
    name = postgres.take_database()
    url = postgres.url_of(name)

    def env(**overrides: str) -> dict[str, str]:
        return replica_environment(_entra_session, entra_server, url, authz, **overrides)

    envs = {"r1": env(), "r2": env(LKPS_WORKERS="2"), "r3": env()}
    try:
        with replicas(envs, workdir) as running:
            yield Fleet(url, envs, running, workdir)
    finally:
        postgres.drop_database(name, wait=False)


@pytest.fixture
def fleet(_fleet: Fleet) -> Fleet:
    """The module's fleet, every replica running (whatever order the tests ran in)."""
    dead = [replica for replica in _fleet.replicas.values() if not replica.running]
    for replica in dead:
        replica.start()
    for replica in dead:
        replica.wait_ready()
    return _fleet


async def test_three_replicas_are_one_service(fleet: Fleet, identities: Identities) -> None:
    users = identities.users(12)
    agent_1, agent_2 = identities.agent(AGENT), identities.agent(AGENT_2)
    traffic = Traffic()
    head, marks = await fleet.head(), fleet.log_marks()
    r1, r2, r3 = (fleet.replicas[name] for name in ("r1", "r2", "r3"))
    everyone = [r1, r2, r3]
    async with http_client() as http:
        # Registered through replica 1, present on replica 2 at once.
        registered = await traffic.post(http, r1, REGISTER, agent_1)
        assert registered.status == 200, registered.body
        started = await traffic.post(
            http, r2, SESSION_START, users[0], {"agent_entra_app_id": AGENT}
        )
        assert started.status == 200, started.body
        first_2 = await traffic.post(http, r3, REGISTER, agent_2)
        assert first_2.status == 200, first_2.body
        agent_1_registration = registered.field("registration_id")

        # Load: session starts for both agents on every replica; meanwhile AGENT_2's
        # workers come and go and both agents heartbeat, each through some replica.
        stop = asyncio.Event()

        def starter(i: int) -> Callable[[int], Awaitable[None]]:
            at = spread(everyone, i)

            async def start(n: int) -> None:
                agent = AGENT if (n + i) % 2 else AGENT_2
                await traffic.post(
                    http,
                    at(n),
                    SESSION_START,
                    users[(n + i) % len(users)],
                    {"agent_entra_app_id": agent, "metadata": {"n": n}},
                )

            return start

        async def agent_workers(n: int) -> None:
            worker = await traffic.post(http, everyone[n % 3], REGISTER, agent_2)
            await traffic.post(
                http,
                everyone[(n + 1) % 3],
                HEARTBEAT,
                agent_2,
                {"registration_id": worker.field("registration_id")},
            )
            await traffic.post(
                http,
                everyone[(n + 2) % 3],
                HEARTBEAT,
                agent_1,
                {"registration_id": agent_1_registration},
            )

        load = asyncio.gather(
            *(keep_going(stop, starter(i)) for i in range(STARTERS)),
            keep_going(stop, agent_workers),
        )
        await asyncio.sleep(3.0)
        stop.set()
        await load
        load_statuses = {path: traffic.statuses(path) for path in (SESSION_START, REGISTER)}

        # Deregistered through replica 2: gone on replicas 1 and 3 at once.
        deregistered = await traffic.post(http, r2, DEREGISTER, agent_2)
        assert deregistered.status == 204, deregistered.body
        gone_1 = await traffic.post(
            http, r1, SESSION_START, users[1], {"agent_entra_app_id": AGENT_2}
        )
        gone_3 = await traffic.post(
            http, r3, SESSION_START, users[2], {"agent_entra_app_id": AGENT_2}
        )
        heartbeat_gone = await traffic.post(
            http, r1, HEARTBEAT, agent_2, {"registration_id": first_2.field("registration_id")}
        )
        still_1 = await traffic.post(
            http, r3, SESSION_START, users[3], {"agent_entra_app_id": AGENT}
        )
    logs = fleet.logs_since(marks)

    for gone in (gone_1, gone_3):
        assert gone.status == 404, gone.body
        check_error_body(gone)
        assert gone.field("message") == f"Agent with app ID '{AGENT_2}' is not connected"
    assert heartbeat_gone.status == 404
    assert still_1.status == 200, still_1.body

    # Under load every answer was a 200, from every replica.
    assert set(traffic.statuses()) <= {200, 204, 404}, traffic.statuses()
    assert set(load_statuses[SESSION_START]) == {200}, load_statuses
    assert set(load_statuses[REGISTER]) == {200}, load_statuses
    assert set(traffic.statuses(HEARTBEAT)) == {200, 404}
    by_replica = Counter(e.replica for e in traffic.select(SESSION_START, status=200))
    assert min(by_replica[name] for name in fleet.replicas) >= 10, by_replica

    # The store: exactly one record per audited answer, each granted session start's
    # record naming the room and session its client got, and one intact chain.
    records = await fleet.records_after(head)
    audited = [e for e in traffic.exchanges if e.audited]
    answered = answered_records(records)
    assert len(answered) == len(audited)
    assert {r.request_id for r in answered} == traffic.request_ids(audited)
    assert rejections_recorded(traffic, records) == []
    assert granted_sessions_without_record(traffic, records) == []
    assert records_nobody_saw(traffic, records) == []
    total = head + len(records)
    assert [r.seq for r in records] == list(range(head + 1, total + 1))
    verified = fleet.verify_chain()
    assert verified == f"audit chain intact: {total} records, head at {total}"

    report = check_logs(logs, traffic, [LIVEKIT_SECRET])
    assert_clean(report)
    events = Counter(f"{r.event}:{r.status}" for r in records)
    print(
        f"\n[replicas] session starts 200 per replica {dict(by_replica)}, "
        f"registers {load_statuses[REGISTER][200]}, "
        f"heartbeats {dict(traffic.statuses(HEARTBEAT))}; audit records {len(records)} "
        f"= audited answers {len(audited)} {dict(events)}; {verified}; {report.summary()}"
    )


async def test_a_replica_killed_under_load(fleet: Fleet, identities: Identities) -> None:
    users = identities.users(12)
    agent = identities.agent(AGENT)
    traffic = Traffic()
    head, marks = await fleet.head(), fleet.log_marks()
    everyone = list(fleet.replicas.values())
    victim = fleet.replicas["r3"]
    async with http_client() as http:
        assert (await traffic.post(http, everyone[0], REGISTER, agent)).status == 200
        stop = asyncio.Event()

        def starter(i: int) -> Callable[[int], Awaitable[None]]:
            at = spread(everyone, i)

            async def start(n: int) -> None:
                replica = at(n)
                if not replica.running and n % 8:
                    # A client that found the replica dead tries it only now and then
                    # (as a load balancer would), rather than spinning on refusals.
                    replica = at(n + 1) if at(n + 1).running else at(n + 2)
                await traffic.post(
                    http,
                    replica,
                    SESSION_START,
                    users[(n + i) % len(users)],
                    {"agent_entra_app_id": AGENT},
                )

            return start

        load = asyncio.gather(*(keep_going(stop, starter(i)) for i in range(STARTERS)))
        await asyncio.sleep(1.5)
        killed_at = time.monotonic()
        victim.kill()
        assert victim.wait(timeout=10) == -signal.SIGKILL
        await asyncio.sleep(2.5)
        stop.set()
        await load
    logs = fleet.logs_since(marks)

    survivors = [e for e in traffic.select(SESSION_START) if e.replica != victim.name]
    after_kill = [e for e in survivors if e.sent_at > killed_at]
    victim_seen = traffic.select(SESSION_START, replica=victim.name)
    victim_after = [e for e in victim_seen if e.sent_at > killed_at]
    lost = [e for e in victim_seen if not e.answered]
    in_flight = [e for e in lost if e.sent_at <= killed_at]
    # The survivors answered every request with 200, during and after the kill.
    assert Counter(e.status for e in survivors) == {200: len(survivors)}
    assert len(after_kill) >= 20, len(after_kill)
    # The victim answered until it died, and nothing after.
    assert any(e.status == 200 for e in victim_seen)
    assert victim_after and all(not e.answered for e in victim_after)

    # Nothing committed is lost: every 200 has its record; a record no client saw can
    # only be a request in flight on the victim when it died (committed, not answered).
    records = await fleet.records_after(head)
    assert granted_sessions_without_record(traffic, records) == []
    unseen = records_nobody_saw(traffic, records)
    assert len(unseen) <= len(in_flight), (unseen, in_flight)
    assert all(r.event == "session.start" and r.status == 200 for r in unseen)
    answered = [e for e in traffic.exchanges if e.audited]
    assert len(answered_records(records)) == len(answered) + len(unseen)
    total = head + len(records)
    verified = fleet.verify_chain()
    assert verified == f"audit chain intact: {total} records, head at {total}"

    report = check_logs(logs, traffic, [LIVEKIT_SECRET])
    # The victim may have logged requests whose answers never left it.
    assert_clean(report, unknown_ids_allowed=len(in_flight))
    print(
        f"\n[sigkill] survivors: {len(survivors)} x 200 ({len(after_kill)} after the kill); "
        f"victim: {sum(1 for e in victim_seen if e.answered)} answered, {len(in_flight)} in "
        f"flight lost, {len(victim_after)} refused after; audit records {len(records)} "
        f"({len(unseen)} committed but unanswered); {verified}; {report.summary()}"
    )
