"""LiveKit webhooks into LKPS on PostgreSQL: events/s, and how soon each shows in
`GET /api/sessions/{id}`. 127.0.0.1 only; everything it starts stops.

    python3 -m uv run python bench/webhooks.py                 # 20 s at full speed
    python3 -m uv run python bench/webhooks.py --duration 30 --workers 2

`lkps serve` (--workers) on a fresh PostgreSQL database (as bench/run.py sets it up), with
enough granted sessions inserted straight into the store for the run; then wrk at full
speed through a file of webhooks signed as livekit-server signs them: per session the
client's join, the agent's join and the room's end (each a step with its audit record;
wrk wraps around the file, and a repeat is verified and changes nothing). Meanwhile a
probe sends a webhook of its own about every 200 ms, for a session of its own, and times
how long until `GET /api/sessions/{id}` shows it. The issue's target: 2,000 events/s on
2 workers, each reflected within 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs
import profiles
from bare_app import API_KEY as BARE_API_KEY
from run import (
    AUDIENCE,
    BENCH,
    PG_HOST,
    PG_PASSWORD,
    PG_PORT,
    PG_USER,
    ROOT,
    bare_durable_uvicorn,
    bare_uvicorn,
    bench_database,
    ensure_postgres,
    find_py_spy,
    lkps_uvicorn,
    make_identities,
    say,
    wait_ready,
)

from lkps.sessions.records import SessionGrant
from lkps.store.audit import GRANTED_SESSION_COLUMNS
from lkps_testkit import EntraDouble, ServerThread
from lkps_testkit.livekit.webhooks import webhook_body, webhook_event, webhook_signature


def grant_of(session_id: str, room: str, agent_id: str, user: str) -> SessionGrant:
    """A session granted to `user` for `agent_id` in `room`, as a session start grants it."""
    return SessionGrant(
        session_id=session_id,
        room_name=room,
        agent_id=agent_id,
        via="start",
        actor_tenant_id="bench-tenant",
        actor_object_id=f"user-{user}",
        actor_cwid=f"user{user}",
        client_app_id="bench-client",
        app_only=False,
        dispatch_metadata="",
        granted_at=datetime.now(UTC),
    )


async def copy_grants(connection: asyncpg.Connection, grants: list[SessionGrant]) -> None:
    """`grants`' session rows, straight into the store, with the columns the audit writer
    stores them with."""
    rows = [
        tuple(row[name] for name in GRANTED_SESSION_COLUMNS)
        for row in map(SessionGrant.row, grants)
    ]
    await connection.copy_records_to_table(
        "sessions", records=rows, columns=list(GRANTED_SESSION_COLUMNS)
    )


async def insert_sessions(database: str, agent_id: str, count: int) -> list[tuple[str, str]]:
    """`count` granted sessions, straight into the store: (session id, room name)."""
    grants = [
        grant_of(
            str(uuid.uuid4()),
            f"bench-{agent_id}-{index}-{uuid.uuid4().hex[:8]}",
            agent_id,
            str(index),
        )
        for index in range(count)
    ]
    connection = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD, database=database
    )
    try:
        await copy_grants(connection, grants)
        states = await connection.fetch("SELECT state, count(*) FROM sessions GROUP BY state")
        say(f"sessions inserted: {dict((r[0], r[1]) for r in states)}")
    finally:
        await connection.close()
    return [(grant.session_id, grant.room_name) for grant in grants]


def one_line(room: str, kind: str, key: str, secret: str, **options: Any) -> str:
    message = webhook_event(kind, room, created=datetime.now(UTC), **options)
    body = webhook_body(message, compact=True)
    return f"{webhook_signature(body, key=key, secret=secret)}\t{body}"


STEPS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("participant_joined", {"identity": "client"}),
    ("participant_joined", {"identity": "agent-AJ_bench", "agent": True}),
    ("room_finished", {}),
)
# Events LKPS verifies, counts and answers without reading further: the request path
# alone (HTTP, middleware, verification), without the store.
UNFOLLOWED: tuple[tuple[str, dict[str, Any]], ...] = (("track_published", {"identity": "client"}),)


def events_file(
    path: Path,
    sessions: list[tuple[str, str]],
    key: str,
    secret: str,
    kinds: tuple[tuple[str, dict[str, Any]], ...] = STEPS,
) -> int:
    """Every session's three steps, the joins of all before any end: in order per
    session, spread over the file (or, with `kinds`, those events)."""
    lines = []
    for kind, options in kinds:
        lines += [one_line(room, kind, key, secret, **options) for _, room in sessions]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


class Probe(threading.Thread):
    """Sends one webhook every `interval` s for sessions of its own, and times how long
    until GET /api/sessions/{id} shows its step."""

    def __init__(
        self,
        url: str,
        auditor: str,
        sessions: list[tuple[str, str]],
        key: str,
        secret: str,
        interval: float = 0.2,
    ) -> None:
        super().__init__(daemon=True)
        self._url = url
        self._headers = {"Authorization": f"Bearer {auditor}"}
        self._sessions = sessions
        self._key, self._secret = key, secret
        self._interval = interval
        self.stop = threading.Event()
        self.delays: list[float] = []
        self.failures = 0

    def run(self) -> None:
        with httpx.Client(base_url=self._url, timeout=10) as http:
            for session_id, room in self._sessions:
                if self.stop.wait(self._interval):
                    return
                auth, body = one_line(
                    room, "participant_joined", self._key, self._secret, identity="probe"
                ).split("\t", 1)
                sent = time.perf_counter()
                answer = http.post(
                    "/api/livekit/webhook", content=body, headers={"Authorization": auth}
                )
                if answer.status_code != 200:
                    self.failures += 1
                    continue
                while time.perf_counter() - sent < 5:
                    view = http.get(f"/api/sessions/{session_id}", headers=self._headers)
                    if view.status_code == 200 and view.json()["state"] == "client_joined":
                        self.delays.append(time.perf_counter() - sent)
                        break
                else:
                    self.failures += 1


async def outcome(database: str) -> dict[str, Any]:
    connection = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD, database=database
    )
    try:
        states = await connection.fetch("SELECT state, count(*) FROM sessions GROUP BY state")
        records = await connection.fetch(
            "SELECT event, count(*) FROM audit_records WHERE event LIKE 'session.%' GROUP BY event"
        )
        return {
            "sessions_by_state": {r[0]: r[1] for r in states},
            "records_by_event": {r[0]: r[1] for r in records},
        }
    finally:
        await connection.close()


def start_profile(
    children: procs.Children, root: int, duration: float, out: Path
) -> subprocess.Popen[Any] | None:
    """py-spy on the workers for the middle of the run (raw collapsed stacks)."""
    spy = find_py_spy()
    if spy is None:
        say("py-spy not found: no profile")
        return None
    time.sleep(2)
    return children.start(
        "py-spy", profiles.py_spy_record(spy, root, duration, out / "profile.txt")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="events/s to provision sessions for"
    )
    parser.add_argument("--out", type=Path, default=BENCH / "out" / "webhooks")
    parser.add_argument("--profile", action="store_true", help="py-spy the workers")
    parser.add_argument(
        "--unfollowed",
        action="store_true",
        help="send only track_published events (the request path without the store)",
    )
    parser.add_argument(
        "--server",
        choices=("lkps", "bare", "durable"),
        default="lkps",
        help="the yardsticks of bench/bare_app.py instead of LKPS: `bare` verifies each "
        "webhook and answers; `durable` also applies it, an UPDATE and an insert per event",
    )
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    children = procs.Children(out)
    try:
        say(f"PostgreSQL: {ensure_postgres()}")
        with contextlib.ExitStack() as stack:
            database = stack.enter_context(bench_database())
            # LKPS stops before its database is dropped (its shutdown writes a checkpoint).
            stack.callback(children.stop_all)
            entra = EntraDouble()
            entra_server = stack.enter_context(ServerThread(entra.asgi_app()))
            ids = make_identities(entra, entra_server.url, out)
            if args.server == "lkps":
                spec = lkps_uvicorn(ids, database, args.workers, out, False, "lkps-webhooks")
                # No re-dispatch during the run: the bench's LiveKit URL leads nowhere.
                spec.env["LKPS_AGENT_JOIN_TIMEOUT_SECONDS"] = "3600"
                key = spec.env["LKPS_LIVEKIT_API_KEY"]
                secret = spec.env["LKPS_LIVEKIT_API_SECRET"]
            else:
                spec = (
                    bare_uvicorn(args.workers)
                    if args.server == "bare"
                    else bare_durable_uvicorn(args.workers, database)
                )
                key, secret = BARE_API_KEY, spec.env["BARE_LIVEKIT_API_SECRET"]
            count = int(args.rate * args.duration / 3) + 1
            sessions = asyncio.run(insert_sessions(database, ids.agent_id, count + 200))
            loaded, probed = sessions[:count], sessions[count:]
            events = out / "events.txt"
            kinds = UNFOLLOWED if args.unfollowed else STEPS
            lines = events_file(events, loaded, key, secret, kinds)
            say(f"{lines} signed events for {count} sessions in {events}")
            server = children.start(spec.name, spec.argv, env=spec.env, cwd=ROOT)
            wait_ready(spec, server)
            auditor = entra.user_token(
                audience=AUDIENCE,
                client_app_id=ids.client_id,
                username="bench.auditor",
                roles=["LKPS.Auditor"],
            )
            # The yardsticks serve no sessions to read back: no probe.
            probe = Probe(spec.url, auditor, probed if spec.kind == "lkps" else [], key, secret)
            workers = procs.worker_pids(server.pid)
            load_before = os.getloadavg()
            postgres = procs.PostgresCpu(database).__enter__()
            cpu_before = procs.CpuSample({"workers": workers, "parent": [server.pid]})
            probe.start()
            load = children.start(
                "wrk-webhooks",
                [
                    "wrk",
                    "-t2",
                    f"-c{args.connections}",
                    f"-d{args.duration:.0f}s",
                    "-s",
                    str(BENCH / "webhooks.lua"),
                    spec.url,
                    "--",
                    str(events),
                ],
                capture=True,
            )
            spy = start_profile(children, server.pid, args.duration, out) if args.profile else None
            load_out, _ = load.communicate(timeout=args.duration + 60)
            cpu_after = procs.CpuSample({"workers": workers, "parent": [server.pid]})
            postgres.__exit__()
            load_after = os.getloadavg()
            probe.stop.set()
            probe.join(timeout=10)
            if spy is not None:
                spy.wait(timeout=60)
            after = asyncio.run(outcome(database))
    finally:
        children.stop_all()
    line = next(ln for ln in load_out.splitlines() if ln.startswith("BENCH_JSON "))
    raw: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    seconds = raw["duration_us"] / 1e6
    delays = sorted(probe.delays)
    shares = cpu_after.shares_since(cpu_before)
    wall = cpu_after.at - cpu_before.at
    events = raw["requests"] + len(delays)
    result = {
        "workers": args.workers,
        "duration_s": round(seconds, 1),
        "events": raw["requests"],
        "events_per_s": round(raw["requests"] / seconds),
        "non_2xx": raw["errors"]["status"],
        "socket_errors": sum(v for k, v in raw["errors"].items() if k != "status"),
        "latency_ms": {k: v / 1000 for k, v in raw["latency_us"].items()},
        "reflected_in_get": {
            "probes": len(delays),
            "failed": probe.failures,
            "p50_ms": round(statistics.median(delays) * 1000, 1) if delays else None,
            "max_ms": round(delays[-1] * 1000, 1) if delays else None,
            "within_1s": sum(d <= 1.0 for d in delays),
        },
        "cpu_cores": shares,
        "worker_cpu_ms_per_event": round(1000 * shares["workers"] * wall / max(events, 1), 3),
        "postgres_cpu_ms_per_event": round(1000 * postgres.seconds / max(events, 1), 3),
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        **after,
    }
    if spy is not None and (out / "profile.txt").exists():
        summary = profiles.summarize(out / "profile.txt", only_processes=workers)
        (out / "profile-summary.txt").write_text(profiles.as_text(summary))
        say(f"profile: {out / 'profile-summary.txt'}")
    (out / "webhooks.json").write_text(json.dumps(result, indent=2))
    say(json.dumps(result, indent=2))
    if spec.kind != "lkps":
        say(f"{spec.name}: {result['events_per_s']:,} webhook events/s (a yardstick)")
    ok = result["events_per_s"] >= 2000 and delays and delays[-1] <= 1.0
    say(
        f"{result['events_per_s']:,} webhook events/s on {args.workers} workers "
        f"(target 2,000), non-2xx {result['non_2xx']}; reflected in GET: p50 "
        f"{result['reflected_in_get']['p50_ms']} ms, max {result['reflected_in_get']['max_ms']}"
        f" ms over {len(delays)} probes (target ≤ 1 s): {'MET' if ok else 'MISSED'}"
    )
    say(
        f"worker CPU {result['worker_cpu_ms_per_event']} ms/event "
        f"({shares['workers']} cores), PostgreSQL {result['postgres_cpu_ms_per_event']} "
        f"ms/event, machine {shares['machine']} cores busy (others {shares['other']}), "
        f"load average {result['load_average_before_after']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
