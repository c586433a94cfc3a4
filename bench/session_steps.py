"""CPU cost of the session steps' store side, per webhook event, by batch size.

    python3 -m uv run python bench/session_steps.py
    python3 -m uv run python bench/session_steps.py --sizes 1 8 32 --events 6000

`SessionLifecycle.apply` on PostgreSQL (a throwaway database, as bench/run.py makes),
without HTTP: batches of B client joins, each of another granted room, applied with their
audit records. B applies are started at once, so the step writer finds all B queued and
commits them as one batch. Reported per event: this process's CPU (its main thread, where
the event loop runs) and the CPU of this database's PostgreSQL backends; and the wall
time per batch. Only APIs main
has had since the steps were batched are used, so the same script measures either tree.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs
from run import bench_database, ensure_postgres, say, sqlalchemy_url
from webhooks import copy_grants, grant_of

from lkps.audit import AuditLog
from lkps.clock import SystemClock
from lkps.livekit.webhooks import WebhookFacts
from lkps.sessions.lifecycle import SessionLifecycle
from lkps.store import Database


async def granted_rooms(url: str, count: int) -> list[str]:
    """`count` granted sessions, straight into the store; their rooms."""
    rooms = [f"bench-{index}-{uuid.uuid4().hex[:8]}" for index in range(count)]
    grants = [grant_of(str(uuid.uuid4()), room, "agent", "0") for room in rooms]
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await copy_grants(connection, grants)
        await connection.execute("ANALYZE sessions")
    finally:
        await connection.close()
    return rooms


async def measure(database: str, sizes: list[int], events: int) -> list[dict[str, Any]]:
    url = sqlalchemy_url(database)
    rooms = iter(await granted_rooms(url, sum(events + 2 * size for size in sizes)))
    db = Database.from_url(url)
    audit = AuditLog(db)
    # No no-show scan runs here: the dispatcher is never called.
    lifecycle = SessionLifecycle(db, audit, None, SystemClock(), agent_join_timeout=3600)  # type: ignore[arg-type]
    await audit.start()
    await lifecycle.start()

    async def batch(size: int) -> None:
        joins = [
            WebhookFacts("participant_joined", next(rooms), "RM_1", "alice", "PA_1")
            for _ in range(size)
        ]
        applied = await asyncio.gather(*(lifecycle.apply(join) for join in joins))
        assert all(applied)

    results = []
    try:
        for size in sizes:
            await batch(size)  # statements prepared, caches warm
            done = 0
            postgres = procs.PostgresCpu(database).__enter__()
            cpu, wall = time.thread_time(), time.perf_counter()
            while done < events:
                await batch(size)
                done += size
            spent, wall = time.thread_time() - cpu, time.perf_counter() - wall
            postgres.__exit__()
            results.append(
                {
                    "batch": size,
                    "events": done,
                    "lkps_cpu_ms_per_event": round(1000 * spent / done, 3),
                    "postgres_cpu_ms_per_event": round(1000 * postgres.seconds / done, 3),
                    # One batch after another: its round trips, on an otherwise idle loop.
                    "wall_ms_per_batch": round(1000 * wall * size / done, 3),
                }
            )
            say(f"{results[-1]}")
    finally:
        await lifecycle.stop()
        await audit.stop()
        await db.dispose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--events", type=int, default=6000, help="per batch size")
    args = parser.parse_args()
    say(f"PostgreSQL: {ensure_postgres()}")
    with bench_database() as database:
        asyncio.run(measure(database, args.sizes, args.events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
