"""PostgreSQL stops in the middle of a load and comes back: LKPS answers 503 with
Retry-After (never a 500, never a token) while it is gone, loses nothing it answered
200 for, and serves again once it is back, without a restart.

The cluster is this test's own (see tests/faults/postgres.py), so stopping it leaves
the shared server to the other tests. Recovery must not depend on the engine's
`pool_pre_ping`: without it, the first use of each dead pooled connection fails (one
more 503) and SQLAlchemy invalidates the pool on that disconnect error.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.conftest import AGENT, LIVEKIT_SECRET
from tests.faults.conftest import EnvFactory, Identities
from tests.faults.logs import assert_clean, check_logs
from tests.faults.postgres import PrivatePostgres
from tests.faults.traffic import (
    HEARTBEAT,
    REGISTER,
    SESSION_START,
    Traffic,
    check_error_body,
    granted_sessions_without_record,
    http_client,
    keep_going,
    read_audit,
    records_nobody_saw,
    verify_audit,
)
from tests.processes import replicas, run_lkps

pytestmark = pytest.mark.e2e

STARTERS = 4
RECOVERY_BOUND = 15.0  # seconds from "PostgreSQL accepts connections" to a 200


async def test_postgres_outage_under_load(
    private_postgres: PrivatePostgres,
    lkps_env: EnvFactory,
    identities: Identities,
    tmp_path: Path,
) -> None:
    database_url = private_postgres.create_database("lkps")
    env = lkps_env(database_url)
    upgraded = run_lkps("db", "upgrade", env=env, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    users = identities.users(8)
    agent = identities.agent(AGENT)
    traffic = Traffic()
    with replicas({"lkps": env}, tmp_path) as running:
        lkps = running["lkps"]
        async with http_client() as http:
            registered = await traffic.post(http, lkps, REGISTER, agent)
            assert registered.status == 200, registered.body
            stop = asyncio.Event()

            def starter(i: int) -> Callable[[int], Awaitable[None]]:
                async def start(n: int) -> None:
                    await traffic.post(
                        http,
                        lkps,
                        SESSION_START,
                        users[(n + i) % len(users)],
                        {"agent_entra_app_id": AGENT},
                    )
                    await asyncio.sleep(0.01)  # a client's think time, not a spin on 503s

                return start

            async def heartbeat(n: int) -> None:
                body = {"registration_id": registered.field("registration_id")}
                await traffic.post(http, lkps, HEARTBEAT, agent, body)
                await asyncio.sleep(0.05)

            load = asyncio.gather(
                *(keep_going(stop, starter(i)) for i in range(STARTERS)),
                keep_going(stop, heartbeat),
            )
            await asyncio.sleep(1.0)
            await asyncio.to_thread(private_postgres.stop, "immediate")
            down_at = time.monotonic()
            await asyncio.sleep(2.5)
            up_from = time.monotonic()
            await asyncio.to_thread(private_postgres.start)
            up_at = time.monotonic()
            # Until a session start sent after PostgreSQL is back succeeds, then 1 s more
            # (a session start's 200: a heartbeat's may come first).
            while not any(e.sent_at > up_at for e in traffic.select(SESSION_START, status=200)):
                assert time.monotonic() - up_at < RECOVERY_BOUND, traffic.statuses()
                await asyncio.sleep(0.1)
            recovered = min(
                e.done_at for e in traffic.select(SESSION_START, status=200) if e.sent_at > up_at
            )
            await asyncio.sleep(1.0)
            stop.set()
            await load
            assert lkps.running  # the process that answered before answers again: no restart
        logs = {"lkps": lkps.log_text()}

    starts = traffic.select(SESSION_START)
    # Every request was answered, with 200 or 503: no 500, no hanging up.
    assert Counter(e.status for e in traffic.exchanges).keys() <= {200, 503}, traffic.statuses()
    unavailable = [e for e in traffic.exchanges if e.status == 503]
    for exchange in unavailable:
        check_error_body(exchange)
        assert exchange.field("error") == "service_unavailable"
        assert int(exchange.headers["retry-after"]) > 0
    # While PostgreSQL was down (requests sent after it stopped and answered before it
    # was started again) nothing was granted; there were such requests, of every kind.
    outage = [e for e in traffic.exchanges if e.sent_at > down_at and e.done_at < up_from]
    assert {e.path for e in outage} == {SESSION_START, HEARTBEAT}, Counter(e.path for e in outage)
    assert Counter(e.status for e in outage) == {503: len(outage)}
    # Back without a restart: once one session start succeeded again, all of them did.
    after = [e for e in starts if e.sent_at > recovered]
    assert after and Counter(e.status for e in after) == {200: len(after)}
    recovery = recovered - up_at

    # Every 200 has its record; a record no client saw as such can only be a commit whose
    # acknowledgement PostgreSQL's stop cut off (the client got 503 for it).
    records = await read_audit(database_url)
    assert granted_sessions_without_record(traffic, records) == []
    unseen = records_nobody_saw(traffic, records)
    assert {traffic_status(traffic, r.request_id) for r in unseen} <= {503}
    # So the store holds: a record per 200, the denials it could record (503s whose
    # record was written, e.g. PostgreSQL failed the presence lookup, then came back for
    # the audit write), and those unseen commits; nothing else.
    granted = [e for e in traffic.exchanges if e.audited and e.status == 200]
    recorded_503 = [r for r in records if r.status == 503]
    assert len(records) == len(granted) + len(recorded_503) + len(unseen)
    verified = await verify_audit(database_url)
    assert verified.ok and verified.records_checked == len(records), verified.describe()

    report = check_logs(logs, traffic, [LIVEKIT_SECRET])
    assert_clean(report)
    print(
        f"\n[postgres-outage] session starts {dict(Counter(e.status for e in starts))}, "
        f"heartbeats {dict(traffic.statuses(HEARTBEAT))}; during the outage "
        f"{len(outage)} x 503; first 200 {recovery:.1f} s after PostgreSQL was back, "
        f"then {len(after)} x 200; audit records {len(records)} ({len(recorded_503)} "
        f"denials recorded as 503, {len(unseen)} committed but answered 503); "
        f"{verified.describe()}; {report.summary()}"
    )


def traffic_status(traffic: Traffic, request_id: str | None) -> int | None:
    return next((e.status for e in traffic.exchanges if e.request_id == request_id), None)
