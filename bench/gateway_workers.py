"""The agent gateway with 1,000 connected workers: what each worker message costs LKPS,
what each connected worker holds in memory, and how session starts fare meanwhile.
127.0.0.1 only; stops by itself (about 6 minutes); everything it starts is stopped.

    python3 -m uv run python bench/gateway_workers.py
    python3 -m uv run python bench/gateway_workers.py --workers 200 --status-seconds 20 \
        --phase-seconds 15 --baseline-seconds 15  # a quick look

What it does (a fresh PostgreSQL database and an Entra double as bench/run.py sets them up):

1. The LiveKit double as its own process (`python -m lkps_testkit.livekit`): LKPS's
   upstream for the relayed worker connections, and the room server that dispatches jobs.
2. `lkps serve` on --lkps-workers (2) uvicorn workers with `LKPS_AGENT_CONNECTION=gateway`
   and PostgreSQL. --agents (50) agents register --workers (1,000) workers in all
   (`POST /api/agent/register` with each agent's app-only token), each getting its own
   gateway credential (lkps/gateway/credentials.py).
3. Baseline: session starts at --rate (bench/paced.py, open loop) with one worker of the
   paced agent connected (bench/gateway_worker.KeptWorker: in gateway mode LKPS grants a
   session only while the agent has a connected worker) and none of the others.
4. Every worker opens a WebSocket to LKPS's `/agent` with `Authorization: Bearer
   <credential>` and sends a protobuf `RegisterWorkerRequest`; LKPS relays it to the
   double over a connection of its own. LKPS's resident memory before and after: memory
   per connected worker. Then --idle-seconds with the workers silent (the floor).
5. Status: every worker sends `UpdateWorkerStatus` every --status-interval (5 s) seconds,
   phases spread, for --status-seconds: LKPS's CPU (all its processes, from /proc) per
   worker message, and the `worker_connections` rows it wrote meanwhile (PostgreSQL's
   statistics). The load reported wanders like a busy host's CPU (livekit-agents'
   default), so that LKPS writes what its coalescing lets through; --fixed-load: 0.1 per
   running job and nothing else (then almost nothing is written).
6. Starts, for --phase-seconds: the status updates go on, session starts at --rate
   (paced.py: latency p50/p99 beside the baseline's).
7. Mixed, for --phase-seconds: the same, plus job traffic: --job-rate session starts a
   second for random agents whose participant token joins the double's room (its
   `/_double/join`), so the double dispatches the job: availability request → the worker
   answers available → assignment → the worker reports JS_RUNNING, then JS_SUCCESS after
   --job-seconds. Every phase also reports the CPU (in cores) of LKPS, the double, this
   driver and the whole machine: the machine may be shared, and its load moves latency.

Prints the figures as JSON and one summary line per figure; writes them to
bench/out/gateway-workers/<timestamp>/results.json with the processes' logs. Status
updates are written to the store as presence and capacity need them (lkps.gateway.live:
coalesced), so the CPU per message and the latencies include those writes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import secrets
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs
from gateway_worker import Counts, KeptWorker, Worker
from run import (
    AUDIENCE,
    BENCH,
    LIVEKIT_KEY,
    PG_HOST,
    PG_PASSWORD,
    PG_PORT,
    PG_USER,
    ROOT,
    TOKEN_LIFETIME,
    Identities,
    bench_database,
    ensure_postgres,
    lkps_uvicorn,
    make_identities,
    say,
    start_livekit_double,
    wait_ready,
)

from lkps_testkit import EntraDouble, ServerThread

# --- Set-up ---------------------------------------------------------------------


@dataclass
class Cast:
    """The agents (ids and app-only tokens) and who may start sessions with them."""

    ids: Identities
    agents: dict[str, str]  # agent id -> its app-only token
    user_tokens: list[str]


def make_cast(entra: EntraDouble, entra_url: str, out: Path, agents: int) -> Cast:
    """bench/run.py's identities (1,000 users of one client app, the paced agent), plus
    `agents - 1` more agents, every one pre-authorizing that client app."""
    ids = make_identities(entra, entra_url, out)
    tokens = {ids.agent_id: ids.agent_token}
    for _ in range(agents - 1):
        agent_id = str(uuid.uuid4())
        tokens[agent_id] = entra.app_token(
            audience=AUDIENCE, client_app_id=agent_id, lifetime=TOKEN_LIFETIME
        )
    ids.authz_file.write_text(
        json.dumps(
            {"agents": {a: {"pre_authorized_clients": [ids.client_id]} for a in tokens}}, indent=2
        )
    )
    return Cast(ids, tokens, ids.tokens_file.read_text().split())


# --- The workers (bench/gateway_worker.py) -------------------------------------


class Bench:
    """The workers, the job traffic, and what they counted."""

    def __init__(self, args: argparse.Namespace, lkps_url: str, livekit_http: str) -> None:
        self.args = args
        self.lkps_url = lkps_url
        self.livekit_http = livekit_http
        self.job_seconds: float = args.job_seconds
        self.counts = Counts()
        self.workers: list[Worker] = []
        self.joined_at: dict[str, float] = {}
        self.job_starts: list[float] = []  # session-start latency of the job traffic, s
        self.job_failures: Counter[str] = Counter()
        self.connect_failures: Counter[str] = Counter()

    async def register(self, cast: Cast) -> None:
        agents = list(cast.agents)
        gate = asyncio.Semaphore(16)

        async def one(i: int, client: httpx.AsyncClient) -> Worker:
            agent_id = agents[i % len(agents)]
            async with gate:
                response = await client.post(
                    f"{self.lkps_url}/api/agent/register",
                    headers={"Authorization": f"Bearer {cast.agents[agent_id]}"},
                    json={"enforce_client_authz": True, "version": "bench"},
                )
            response.raise_for_status()
            body = response.json()
            if body.get("agent_connection") != "gateway":
                raise RuntimeError(f"LKPS is not in gateway mode: {body.get('agent_connection')}")
            wander = None if self.args.fixed_load else random.Random(i)
            return Worker(
                agent_id,
                body["token"],
                body["gateway_url"],
                self,
                base_load=0.0 if self.args.fixed_load else 0.4,
                wander=wander,
            )

        async with httpx.AsyncClient(timeout=30) as client:
            self.workers = list(
                await asyncio.gather(*(one(i, client) for i in range(self.args.workers)))
            )

    async def connect(self, session: aiohttp.ClientSession) -> float:
        gate = asyncio.Semaphore(32)

        async def one(worker: Worker) -> None:
            async with gate:
                await worker.connect(session)

        started = time.monotonic()
        outcomes = await asyncio.gather(*(one(w) for w in self.workers), return_exceptions=True)
        elapsed = time.monotonic() - started
        failed = [
            (w, o)
            for w, o in zip(self.workers, outcomes, strict=True)
            if isinstance(o, BaseException)
        ]
        if failed:
            # Measured on the workers that made it, and said loudly: a limit was hit.
            self.connect_failures = Counter(type(o).__name__ for _, o in failed)
            say(
                f"{len(failed)} of {len(self.workers)} workers did not register: {dict(self.connect_failures)} (see lkps-gateway.log)"
            )
            await asyncio.gather(*(w.close() for w, _ in failed), return_exceptions=True)
            gone = {id(w) for w, _ in failed}
            self.workers = [w for w in self.workers if id(w) not in gone]
        return elapsed

    async def report_status(self, stop: asyncio.Event) -> None:
        """Every worker every --status-interval seconds, phases spread evenly."""
        interval: float = self.args.status_interval
        count = len(self.workers)
        started = time.monotonic()
        tick = 0
        while not stop.is_set():
            worker = self.workers[tick % count]
            due = started + tick * interval / count
            delay = due - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            with contextlib.suppress(ConnectionError, RuntimeError):
                await worker.status()
            tick += 1

    async def job_traffic(self, stop: asyncio.Event, cast: Cast) -> None:
        """--job-rate session starts a second for random agents, each joined at the
        double so that LiveKit dispatches the job through the gateway."""
        rate: float = self.args.job_rate
        agents = list(cast.agents)
        tasks: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=30) as client:
            started = time.monotonic()
            i = 0
            while not stop.is_set():
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    if stop.is_set():
                        break
                task = asyncio.create_task(
                    self._one_job(client, random.choice(agents), random.choice(cast.user_tokens))
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if tasks:
                await asyncio.wait(tasks, timeout=30)

    async def _one_job(self, client: httpx.AsyncClient, agent_id: str, user_token: str) -> None:
        begun = time.monotonic()
        try:
            response = await client.post(
                f"{self.lkps_url}/api/session/start",
                headers={"Authorization": f"Bearer {user_token}"},
                json={"agent_entra_app_id": agent_id, "metadata": {"bench": "gateway"}},
            )
            if response.status_code != 200:
                self.job_failures[f"session {response.status_code}"] += 1
                return
            self.job_starts.append(time.monotonic() - begun)
            session = response.json()
            self.joined_at[session["room_name"]] = time.monotonic()
            joined = await client.post(
                f"{self.livekit_http}/_double/join", json={"token": session["participant_token"]}
            )
            if joined.status_code != 200:
                self.job_failures[f"join {joined.status_code}"] += 1
        except httpx.HTTPError as exc:
            self.job_failures[type(exc).__name__] += 1

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self.workers), return_exceptions=True)


# --- Measuring ------------------------------------------------------------------


def keep_paced_agent(lkps_url: str, cast: Cast) -> KeptWorker:
    """One worker of the paced agent, connected before the baseline and kept to the end:
    without it the baseline's session starts would all be 404 (not connected)."""
    response = httpx.post(
        f"{lkps_url}/api/agent/register",
        headers={"Authorization": f"Bearer {cast.agents[cast.ids.agent_id]}"},
        json={"enforce_client_authz": True, "version": "bench"},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    return KeptWorker(cast.ids.agent_id, lambda: (body["token"], body["gateway_url"])).start()


def lkps_pids(root: int) -> list[int]:
    """`lkps serve` and its uvicorn workers (not multiprocessing's resource tracker)."""
    return [
        root,
        *(p for p in procs.descendants(root) if "resource_tracker" not in procs.cmdline(p)),
    ]


def rss_kb(pids: list[int]) -> int:
    return sum(procs.memory_kb(pid).get("VmRSS", 0) for pid in pids)


def cpu_s(pids: list[int]) -> float:
    return sum(procs.cpu_seconds(pid) for pid in pids)


def quantiles_ms(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49] * 1e3, 2), "p99": round(cuts[98] * 1e3, 2), "n": len(values)}


async def paced(args: argparse.Namespace, port: int, cast: Cast, seconds: float) -> dict[str, Any]:
    """bench/paced.py at --rate against the paced agent, as a process of its own."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(BENCH / "paced.py"), "--port", str(port),
        "--tokens", str(cast.ids.tokens_file), "--body", cast.ids.body,
        "--rate", str(args.rate), "--duration", str(seconds), "--warmup", "2",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


class Shares:
    """CPU of LKPS, the LiveKit double and this driver over a phase, in cores, and the
    machine's (all cores, everyone's: the machine is shared)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.before = procs.CpuSample(groups)

    def done(self) -> dict[str, float]:
        return procs.CpuSample(self.groups).shares_since(self.before)


async def connection_writes(database: str) -> int:
    """Rows of `worker_connections` inserted or updated so far (PostgreSQL's statistics):
    the presence and capacity writes that status updates cost."""
    connection = await asyncpg.connect(
        f"postgresql://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{database}", timeout=10
    )
    try:
        value = await connection.fetchval(
            "SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables"
            " WHERE relname = 'worker_connections'"
        )
    finally:
        await connection.close()
    return int(value or 0)


async def measure(
    args: argparse.Namespace,
    database: str,
    spec_port: int,
    lkps_root: int,
    double_pid: int,
    cast: Cast,
    bench: Bench,
) -> dict[str, Any]:
    pids = lkps_pids(lkps_root)
    groups = {"lkps": pids, "livekit_double": [double_pid], "bench_driver": [os.getpid()]}
    result: dict[str, Any] = {"lkps_processes": len(pids)}

    say(
        f"baseline: session starts at {args.rate:g}/s, one worker connected ({args.baseline_seconds:g} s)"
    )
    shares = Shares(groups)
    result["baseline"] = {
        "session_start": await paced(args, spec_port, cast, args.baseline_seconds)
    }
    result["baseline"]["cpu_cores"] = shares.done()
    await asyncio.sleep(2)

    rss_before = rss_kb(pids)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        say(f"connecting {len(bench.workers)} workers to {bench.lkps_url}/agent")
        connect_s = await bench.connect(session)
        await asyncio.sleep(5)  # let the relays settle
        rss_after = rss_kb(pids)
        result["connect"] = {
            "workers": len(bench.workers),
            "failed": dict(bench.connect_failures),
            "seconds": round(connect_s, 2),
            "rss_before_mb": round(rss_before / 1024, 1),
            "rss_after_mb": round(rss_after / 1024, 1),
            "rss_per_worker_kb": round((rss_after - rss_before) / len(bench.workers), 1),
        }
        say(f"connected: {json.dumps(result['connect'])}")

        # The floor: connected, silent.
        cpu0, t0 = cpu_s(pids), time.monotonic()
        await asyncio.sleep(args.idle_seconds)
        idle_cores = (cpu_s(pids) - cpu0) / (time.monotonic() - t0)

        say(
            f"status: {len(bench.workers)} workers, one update each every {args.status_interval:g} s ({args.status_seconds:g} s)"
        )
        stop = asyncio.Event()
        reporter = asyncio.create_task(bench.report_status(stop))
        await asyncio.sleep(min(args.status_interval, args.status_seconds / 4))  # into step
        writes0 = await connection_writes(database)
        sent0, cpu0, t0 = bench.counts.total_sent(), cpu_s(pids), time.monotonic()
        shares = Shares(groups)
        await asyncio.sleep(args.status_seconds)
        sent, cpu = bench.counts.total_sent() - sent0, cpu_s(pids) - cpu0
        wall = time.monotonic() - t0
        await asyncio.sleep(1.5)  # PostgreSQL's statistics lag by up to a second
        writes = await connection_writes(database) - writes0
        net = cpu - idle_cores * wall
        result["status"] = {
            "worker_messages": sent,
            "messages_per_s": round(sent / wall, 1),
            "idle_lkps_cpu_cores": round(idle_cores, 3),
            "cpu_us_per_message": round(cpu / sent * 1e6, 1) if sent else None,
            "cpu_us_per_message_above_idle": round(net / sent * 1e6, 1) if sent else None,
            "store_writes": writes,
            "store_writes_per_message": round(writes / sent, 4) if sent else None,
            "cpu_cores": shares.done(),
        }
        say(f"status: {json.dumps(result['status'])}")

        say(f"starts: status + session starts at {args.rate:g}/s ({args.phase_seconds:g} s)")
        shares = Shares(groups)
        result["starts"] = {"session_start": await paced(args, spec_port, cast, args.phase_seconds)}
        result["starts"]["cpu_cores"] = shares.done()

        say(
            f"mixed: status + session starts at {args.rate:g}/s + {args.job_rate:g} jobs/s ({args.phase_seconds:g} s)"
        )
        job_stop = asyncio.Event()
        sent0, received0 = bench.counts.total_sent(), sum(bench.counts.received.values())
        shares = Shares(groups)
        jobs = asyncio.create_task(bench.job_traffic(job_stop, cast))
        paced_result = await paced(args, spec_port, cast, args.phase_seconds)
        job_stop.set()
        await jobs
        cpu_cores = shares.done()
        stop.set()
        await reporter
        await asyncio.sleep(args.job_seconds + 1)  # jobs report their end
        result["mixed"] = {
            "session_start": paced_result,
            "job_traffic": {
                "session_start_ms": quantiles_ms(bench.job_starts),
                "dispatch_ms": quantiles_ms(bench.counts.dispatch_s),
                "jobs_dispatched": len(bench.counts.dispatch_s),
                "failures": dict(bench.job_failures),
            },
            "worker_messages": bench.counts.total_sent() - sent0,
            "server_messages": sum(bench.counts.received.values()) - received0,
            "cpu_cores": cpu_cores,
            "lkps_rss_mb": round(rss_kb(pids) / 1024, 1),
        }
        result["messages"] = {
            "sent": dict(bench.counts.sent),
            "received": dict(bench.counts.received),
        }
        await bench.close()
    return result


def summary(result: dict[str, Any]) -> list[str]:
    status, connect = result["status"], result["connect"]
    jobs = result["mixed"]["job_traffic"]

    def starts(phase: str) -> str:
        figures = result[phase]["session_start"]
        latency, cores = figures["latency_ms"], result[phase]["cpu_cores"]
        return (
            f"p50 {latency['p50']} ms, p99 {latency['p99']} ms (non-2xx {figures['non_2xx']}; "
            f"LKPS {cores['lkps']} cores, machine {cores['machine']} of {result['cpus']})"
        )

    return [
        f"workers connected: {connect['workers']} in {connect['seconds']} s "
        f"(failed: {connect['failed'] or 'none'})",
        f"CPU per worker message: {status['cpu_us_per_message']} µs "
        f"({status['cpu_us_per_message_above_idle']} µs above the connected-idle floor of "
        f"{status['idle_lkps_cpu_cores']} cores) at {status['messages_per_s']} messages/s; "
        f"store writes {status['store_writes']} ({status['store_writes_per_message']} a message)",
        f"memory per connected worker: {connect['rss_per_worker_kb']} kB "
        f"(LKPS RSS {connect['rss_before_mb']} → {connect['rss_after_mb']} MB)",
        f"session start, one worker: {starts('baseline')}",
        f"session start, {connect['workers']} workers reporting status: {starts('starts')}",
        f"session start, {connect['workers']} workers + jobs: {starts('mixed')}",
        f"jobs dispatched through the gateway: {jobs['jobs_dispatched']}, join → assignment "
        f"{jobs['dispatch_ms']}; failures {jobs['failures'] or 'none'}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--lkps-workers", type=int, default=2)
    parser.add_argument("--status-interval", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=50.0, help="paced session starts/s")
    parser.add_argument("--job-rate", type=float, default=2.0, help="dispatched jobs/s")
    parser.add_argument("--job-seconds", type=float, default=10.0)
    parser.add_argument("--baseline-seconds", type=float, default=30.0)
    parser.add_argument("--idle-seconds", type=float, default=15.0)
    parser.add_argument("--status-seconds", type=float, default=60.0)
    parser.add_argument(
        "--phase-seconds", type=float, default=45.0, help="each session-start phase, workers on"
    )
    parser.add_argument(
        "--fixed-load",
        action="store_true",
        help="workers report 0.1 per running job and nothing else (default: a load that "
        "wanders like a busy host's CPU, as livekit-agents reports by default)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out or BENCH / "out" / "gateway-workers" / stamp
    out.mkdir(parents=True, exist_ok=True)
    # Three sockets per worker across the processes: never short of descriptors.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    children = procs.Children(out)
    try:
        say(f"PostgreSQL: {ensure_postgres()}")
        with contextlib.ExitStack() as stack:
            database = stack.enter_context(bench_database())
            entra = EntraDouble()
            entra_server = stack.enter_context(ServerThread(entra.asgi_app()))
            cast = make_cast(entra, entra_server.url, out, args.agents)
            secret = secrets.token_urlsafe(36)
            livekit_url, double_pid = start_livekit_double(children, secret)
            spec = lkps_uvicorn(cast.ids, database, args.lkps_workers, out, False, "lkps-gateway")
            spec.env |= {
                "LKPS_LIVEKIT_URL": livekit_url,
                "LKPS_LIVEKIT_API_KEY": LIVEKIT_KEY,
                "LKPS_LIVEKIT_API_SECRET": secret,
                "LKPS_AGENT_CONNECTION": "gateway",
                # The workers never heartbeat: their registrations must outlive the run
                # (a lapsed registration's socket is closed).
                "LKPS_PRESENCE_TTL": "3600",
                "LKPS_RATE_LIMIT_REGISTER_PER_AGENT": "100000",
            }
            server = children.start(spec.name, spec.argv, env=spec.env, cwd=ROOT)
            wait_ready(spec, server)
            kept = keep_paced_agent(spec.url, cast)
            stack.callback(kept.stop)
            bench = Bench(args, spec.url, "http" + livekit_url.removeprefix("ws"))
            say(f"registering {args.workers} workers of {args.agents} agents")
            asyncio.run(bench.register(cast))
            result = {
                "date": stamp,
                "args": vars(args) | {"out": str(out)},
                "cpus": len(os.sched_getaffinity(0)),
                "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
            }
            result |= asyncio.run(
                measure(args, database, spec.port, server.pid, double_pid, cast, bench)
            )
            result["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    finally:
        children.stop_all()
    (out / "results.json").write_text(json.dumps(result, indent=2))
    say(json.dumps(result, indent=2))
    for line in summary(result):
        say(line)
    say(f"written: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
