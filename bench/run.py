"""LKPS session-start benchmark: one command, 127.0.0.1 only, everything it starts stopped.

    python3 -m uv run python bench/run.py                 # default, about 3 minutes
    python3 -m uv run python bench/run.py --large-store   # + 1,000,000 audit rows, 10,000 agents
    python3 -m uv run python bench/run.py --granian --profile --redis
    python3 -m uv run python bench/run.py --baseline origin/main  # before/after, one run
    python3 -m uv run python bench/run.py --baseline c7ee5b6 --interleave 5  # drift-proof A/B

What it does:

1. PostgreSQL: `scripts/services` (or, without it, `pg_ctlcluster 15 main start` and the
   `lkps` role); a fresh database `lkps_bench_<random>`, migrated with `lkps db upgrade`,
   dropped at the end.
2. An Entra double (lkps_testkit.EntraDouble on a ServerThread) whose JWKS LKPS trusts;
   1,000 user tokens (distinct users of one client app) and one agent app token.
3. `lkps serve` (LKPS_ENV=np, an allow-list file pre-authorizing the client for the
   agent, LKPS_WORKERS workers), ready at /api/health/ready; the agent registers and a
   thread keeps it present with heartbeats (`LKPS_AGENT_CONNECTION=direct`). With
   --gateway, LKPS runs in gateway mode in front of the LiveKit double (its own process;
   the real livekit-server would add a Go server's CPU to a shared 2-core machine and
   nothing to the session start, which never calls LiveKit), and the agent is present by
   one worker connected through LKPS's `/agent` reporting load 0.1
   (bench/gateway_worker.py), so every session start runs the gateway's presence read.
   A --baseline revision without a gateway is kept present by heartbeats alone.
4. POST /api/session/start: wrk warm-up, then wrk at full speed (closed loop:
   --connections over --threads, --duration seconds), then bench/paced.py at a fixed
   --rate (open loop, latency from each request's due time).
5. The same against bench/bare_app.py (the same participant token, nothing else) under
   uvicorn with the same worker count, and LKPS ÷ bare; then against its `durable_app`
   (the same token plus one indexed read and one committed insert per request), and
   LKPS ÷ bare + durable.
6. Options: --granian (LKPS's ASGI factory under granian instead of uvicorn), --redis
   (rate limits through Redis), --profile (py-spy on LKPS's workers during the full-speed
   run), --large-store (bulk-load 1,000,000 audit rows and 10,000 agents, then measure
   LKPS again and compare), --interleave ROUNDS with --baseline (both servers up at once,
   full-speed and fixed-rate runs alternating between them ROUNDS times, medians: on a
   VM whose speed drifts by ±30 % between minutes, a before-then-after run measured the
   drift, not the change).

Prints the figures and the targets; writes results.json, summary.md, logs and profiles
under bench/out/<timestamp>/.
"""

# ruff: noqa: S603, S607

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import large_store
import procs
import profiles
from gateway_worker import KeptWorker
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from lkps_testkit import EntraDouble, ServerThread

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent
PG_HOST, PG_PORT, PG_USER, PG_PASSWORD = "127.0.0.1", 5432, "lkps", "lkps"
ADMIN_DSN = f"postgresql://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
AUDIENCE = "api://lkps-bench"
LIVEKIT_KEY = "APIbench"
TOKEN_LIFETIME = 4 * 3600
USERS = 1000
SESSION_PATH = "/api/session/start"
BODY_METADATA = {"language": "en", "topic": "billing", "bench": True}

TARGETS = {
    "ratio": 0.5,
    "throughput": 1500.0,
    "p99_ms": 50.0,
    "rss_mb": 200.0,
}


def say(text: str) -> None:
    print(text, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- PostgreSQL ------------------------------------------------------------------


async def _pg_answers() -> bool:
    try:
        connection = await asyncpg.connect(ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


def ensure_postgres() -> str:
    """Make PostgreSQL answer on 127.0.0.1:5432 as lkps/lkps; says how."""
    services = ROOT / "scripts" / "services"
    if services.is_file() and os.access(services, os.X_OK):
        subprocess.run([str(services)], check=True, timeout=600, cwd=ROOT)
        how = "scripts/services"
    elif asyncio.run(_pg_answers()):
        return "already running"
    else:
        subprocess.run(["pg_ctlcluster", "15", "main", "start"], check=False, timeout=120)
        subprocess.run(
            [
                "su",
                "postgres",
                "-c",
                "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='lkps'\" | grep -q 1 || "
                "psql -c \"CREATE ROLE lkps LOGIN SUPERUSER PASSWORD 'lkps'\"",
            ],
            check=True,
            timeout=60,
        )
        how = "pg_ctlcluster 15 main start"
    deadline = time.monotonic() + 60
    while not asyncio.run(_pg_answers()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL does not answer on {PG_HOST}:{PG_PORT}")
        time.sleep(0.5)
    return how


async def _database_sessions(database: str) -> int:
    connection = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        value = await connection.fetchval(
            "SELECT sessions FROM pg_stat_database WHERE datname = $1", database
        )
    finally:
        await connection.close()
    return int(value or 0)


def database_sessions(database: str) -> int:
    """Connections ever opened to `database` (pg_stat_database.sessions, PostgreSQL 14+;
    the statistics collector may lag by up to half a second)."""
    try:
        return asyncio.run(_database_sessions(database))
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return -1


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextlib.contextmanager
def bench_database(source: Path | None = None) -> Iterator[str]:
    """A fresh database, migrated (by the LKPS at `source`, a `packages/server/src`, when
    given: a baseline's schema may differ); dropped on the way out. Yields its name."""
    name = f"lkps_bench_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        env = clean_env() | {"LKPS_DATABASE_URL": sqlalchemy_url(name), "LKPS_ENV": "np"}
        if source is not None:
            env["PYTHONPATH"] = str(source)
        subprocess.run(
            [str(VENV_BIN / "python"), "-m", "lkps", "db", "upgrade"],
            env=env,
            check=True,
            timeout=120,
            cwd=ROOT,
        )
        yield name
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def sqlalchemy_url(database: str) -> str:
    return f"postgresql+asyncpg://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{database}"


def clean_env() -> dict[str, str]:
    """This environment without any LKPS_* or Prometheus setting of the caller's."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LKPS_", "GRANIAN_", "BARE_")) and k != "PROMETHEUS_MULTIPROC_DIR"
    }


# --- Identities ------------------------------------------------------------------


@dataclass
class Identities:
    entra: EntraDouble
    jwks_url: str
    client_id: str
    agent_id: str
    agent_token: str
    tokens_file: Path
    authz_file: Path
    body: str
    # --gateway: the LiveKit double LKPS's agent gateway relays to (ws:// URL, API secret).
    livekit_double: tuple[str, str] | None = None


def make_identities(entra: EntraDouble, entra_url: str, out: Path) -> Identities:
    client_id = str(uuid.uuid4())
    agent_id = str(uuid.uuid4())
    tokens = [
        entra.user_token(
            audience=AUDIENCE,
            client_app_id=client_id,
            username=f"bench.user{i:04d}",
            lifetime=TOKEN_LIFETIME,
        )
        for i in range(USERS)
    ]
    tokens_file = out / "tokens.txt"
    tokens_file.write_text("\n".join(tokens) + "\n")
    authz_file = out / "authz.json"
    authz_file.write_text(
        json.dumps({"agents": {agent_id: {"pre_authorized_clients": [client_id]}}}, indent=2)
    )
    return Identities(
        entra=entra,
        jwks_url=f"{entra_url}/{entra.tenant_id}/discovery/v2.0/keys",
        client_id=client_id,
        agent_id=agent_id,
        agent_token=entra.app_token(
            audience=AUDIENCE, client_app_id=agent_id, lifetime=TOKEN_LIFETIME
        ),
        tokens_file=tokens_file,
        authz_file=authz_file,
        body=json.dumps(
            {"agent_entra_app_id": agent_id, "metadata": BODY_METADATA}, separators=(",", ":")
        ),
    )


class AgentKeeper:
    """Registers the bench agent and keeps it present (heartbeat every 20 s; presence
    TTL is 90 s), registering again if LKPS forgot it. When LKPS answers in gateway mode
    the agent is present only with a worker connected: one is kept connected through
    the gateway (the heartbeats keep its registration, and so its socket, alive)."""

    def __init__(self, base_url: str, token: str, agent_id: str) -> None:
        self._url = base_url
        self._headers = {"Authorization": f"Bearer {token}"}
        self._agent_id = agent_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent-keeper", daemon=True)
        self.registration: dict[str, Any] = {}
        self.worker: KeptWorker | None = None
        self.heartbeats = 0
        self.failures = 0

    @property
    def registration_id(self) -> str | None:
        return self.registration.get("registration_id")

    @property
    def presence(self) -> str:
        return "heartbeats + a worker through the gateway" if self.worker else "heartbeats"

    def register(self) -> None:
        response = httpx.post(
            f"{self._url}/api/agent/register",
            headers=self._headers,
            json={"enforce_client_authz": True, "version": "bench"},
            timeout=10,
        )
        response.raise_for_status()
        self.registration = response.json()

    def _credential(self) -> tuple[str, str]:
        return self.registration["token"], self.registration["gateway_url"]

    def _run(self) -> None:
        while not self._stop.wait(20):
            try:
                response = httpx.post(
                    f"{self._url}/api/agent/heartbeat",
                    headers=self._headers,
                    json={"registration_id": self.registration_id},
                    timeout=10,
                )
                if response.status_code == 404:
                    self.register()
                else:
                    response.raise_for_status()
                self.heartbeats += 1
            except httpx.HTTPError:
                self.failures += 1

    def __enter__(self) -> AgentKeeper:
        self.register()
        if self.registration.get("agent_connection") == "gateway":
            self.worker = KeptWorker(self._agent_id, self._credential, load=0.1).start()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.worker is not None:
            self.worker.stop()
        self._stop.set()
        self._thread.join(timeout=15)


# --- Servers ---------------------------------------------------------------------


@dataclass
class ServerSpec:
    name: str
    kind: str  # "lkps", "bare" or "bare-durable"
    argv: list[str]
    env: dict[str, str]
    port: int
    metrics_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def lkps_env(
    ids: Identities,
    database: str,
    port: int,
    metrics_port: int,
    workers: int,
    out: Path,
    redis: bool,
    database_query: str = "",
) -> dict[str, str]:
    metrics_dir = out / f"prometheus-{port}"
    metrics_dir.mkdir()
    # No LiveKit unless --gateway: a session start never calls it.
    livekit_url, livekit_secret = ids.livekit_double or (
        "wss://livekit.bench.invalid",
        secrets.token_urlsafe(36),
    )
    env = clean_env() | {
        "LKPS_ENV": "np",
        "LKPS_HOST": "127.0.0.1",
        "LKPS_PORT": str(port),
        "LKPS_WORKERS": str(workers),
        "LKPS_LOG_LEVEL": "WARNING",
        "LKPS_DATABASE_URL": sqlalchemy_url(database) + database_query,
        "LKPS_LIVEKIT_URL": livekit_url,
        "LKPS_LIVEKIT_API_KEY": LIVEKIT_KEY,
        "LKPS_LIVEKIT_API_SECRET": livekit_secret,
        "LKPS_ENTRA_TENANT_ID": ids.entra.tenant_id,
        "LKPS_ENTRA_AUDIENCES": AUDIENCE,
        "LKPS_ENTRA_JWKS_URL": ids.jwks_url,
        "LKPS_AUTHZ_SOURCE": "file",
        "LKPS_AUTHZ_FILE": str(ids.authz_file),
        # The limits stay in the path but never trigger: the defaults (6,000 a minute
        # per client app, 60 per user) are far below what a benchmark sends.
        "LKPS_RATE_LIMIT_SESSION_PER_CLIENT": "100000000",
        "LKPS_RATE_LIMIT_SESSION_PER_USER": "100000000",
        "LKPS_METRICS_PORT": str(metrics_port),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        # The keyed audit chain and its checkpoints (required outside dev; a baseline
        # from before them ignores both).
        "LKPS_AUDIT_KEY": secrets.token_urlsafe(32),
        "LKPS_AUDIT_SIGNING_KEY": str(signing_key(out)),
        # The bench agent stays present by heartbeats (direct mode), or with --gateway
        # by a worker connected through the gateway (AgentKeeper).
        "LKPS_AGENT_CONNECTION": "gateway" if ids.livekit_double else "direct",
    }
    if redis:
        env["LKPS_REDIS_URL"] = REDIS_URL
    return env


def signing_key(out: Path) -> Path:
    """An Ed25519 key (PEM) for the audit checkpoints, written once under `out`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = out / "audit-signing.pem"
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.write_bytes(pem)
    return path


def lkps_uvicorn(
    ids: Identities, database: str, workers: int, out: Path, redis: bool, name: str
) -> ServerSpec:
    port, metrics_port = free_port(), free_port()
    env = lkps_env(ids, database, port, metrics_port, workers, out, redis)
    return ServerSpec(name, "lkps", [str(VENV_BIN / "lkps"), "serve"], env, port, metrics_port)


def baseline_source(out: Path, rev: str) -> Path:
    """LKPS as it was at `rev`: a detached git worktree under `out`."""
    source = out / f"baseline-{rev}"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(source), rev],
        check=True,
        capture_output=True,
    )
    return source


def lkps_baseline(
    ids: Identities, database: str, workers: int, out: Path, rev: str, source: Path
) -> ServerSpec:
    """LKPS at `rev` (its worktree `source`): its `packages/server/src` ahead of this
    checkout's on the path, with this checkout's environment and a database of its own
    (migrated by it). For before/after figures from one run, on one machine state."""
    port, metrics_port = free_port(), free_port()
    env = lkps_env(ids, database, port, metrics_port, workers, out, redis=False)
    env["PYTHONPATH"] = str(source / "packages" / "server" / "src")
    argv = [str(VENV_BIN / "python"), "-m", "lkps", "serve"]
    return ServerSpec(f"lkps-baseline[{rev}]", "lkps", argv, env, port, metrics_port)


def lkps_granian(
    ids: Identities, database: str, workers: int, out: Path, redis: bool, name: str
) -> ServerSpec:
    """LKPS's ASGI factory under granian (benchmark only: `lkps serve` runs uvicorn).
    granian is not a project dependency; `uv run --with granian` lends it for the run.
    Without `lkps serve` there is no metrics port; workers still record metrics."""
    port = free_port()
    env = lkps_env(ids, database, port, 0, workers, out, redis)
    uv = os.environ.get("UV") or shutil.which("uv")
    launcher = [uv] if uv else ["python3", "-m", "uv"]
    argv = [
        *launcher,
        "run",
        "--no-sync",
        "--with",
        "granian",
        "python",
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--no-ws",
        "--log-level",
        "warning",
        "lkps.asgi:app_from_environment",
    ]
    return ServerSpec(name, "lkps", argv, env, port)


def lkps_whatif(
    ids: Identities, database: str, workers: int, out: Path, changes: str
) -> ServerSpec:
    """LKPS with bench/whatif.py's in-memory changes, under uvicorn's command line."""
    names = {c.strip() for c in changes.split(",") if c.strip()}
    port = free_port()
    query = "?ssl=disable" if "no-ssl" in names else ""
    env = lkps_env(ids, database, port, 0, workers, out, False, query)
    env["BENCH_WHATIF"] = ",".join(sorted(names - {"no-ssl", "none"}))
    argv = bench_uvicorn("whatif:app_from_environment", port, workers, factory=True)
    return ServerSpec(f"lkps-whatif[{','.join(sorted(names))}]", "lkps", argv, env, port)


def bench_uvicorn(app: str, port: int, workers: int, *, factory: bool = False) -> list[str]:
    """uvicorn serving an app from bench/, as `lkps serve` runs LKPS (quiet, no headers)."""
    return [
        sys.executable, "-m", "uvicorn", app, *(["--factory"] if factory else []),
        "--app-dir", str(BENCH), "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--no-access-log", "--no-server-header",
        "--log-level", "warning",
    ]  # fmt: skip


def bare_uvicorn(workers: int, name: str = "bare-uvicorn") -> ServerSpec:
    port = free_port()
    argv = bench_uvicorn("bare_app:app", port, workers)
    env = clean_env() | {"BARE_LIVEKIT_API_SECRET": secrets.token_urlsafe(36)}
    return ServerSpec(name, "bare", argv, env, port)


def bare_durable_uvicorn(workers: int, database: str) -> ServerSpec:
    port = free_port()
    argv = bench_uvicorn("bare_app:durable_app", port, workers)
    env = clean_env() | {
        "BARE_LIVEKIT_API_SECRET": secrets.token_urlsafe(36),
        "BARE_DATABASE_URL": f"postgresql://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{database}",
    }
    return ServerSpec("bare-durable-uvicorn", "bare-durable", argv, env, port)


def start_livekit_double(children: procs.Children, secret: str) -> tuple[str, int]:
    """The LiveKit double as a process of its own (not a thread: the benchmark's own
    loops, 1,000 workers' in bench/gateway_workers.py, must not share a GIL with it).
    Returns its ws:// URL and its pid."""
    port = free_port()
    argv = [
        sys.executable, "-m", "lkps_testkit.livekit", "--host", "127.0.0.1",
        "--port", str(port), "--api-key", LIVEKIT_KEY, "--api-secret", secret,
        "--keep-workers-on-token-expiry", "--log-level", "WARNING",
    ]  # fmt: skip
    proc = children.start("livekit-double", argv, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the LiveKit double exited: see livekit-double.log")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return f"ws://127.0.0.1:{port}", proc.pid
        time.sleep(0.2)
    raise RuntimeError("the LiveKit double did not answer within 60 s")


def wait_ready(spec: ServerSpec, proc: subprocess.Popen[Any], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{spec.name} exited with {proc.returncode}: see its log")
        try:
            response = httpx.get(f"{spec.url}/api/health/ready", timeout=2)
            if response.status_code == 200:
                return
            last = response.text[:300]
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.25)
    raise RuntimeError(f"{spec.name} not ready within {timeout:.0f} s: {last}")


# --- Load ------------------------------------------------------------------------


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def scrape(spec: ServerSpec) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The workers' metrics, added up from their PROMETHEUS_MULTIPROC_DIR files (what
    `lkps serve`'s metrics port serves), so every way of serving LKPS is covered."""
    directory = spec.env.get("PROMETHEUS_MULTIPROC_DIR")
    if spec.kind != "lkps" or not directory:
        return {}
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    text = generate_latest(registry).decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric_delta(
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    name: str,
    **labels: str,
) -> float:
    total = 0.0
    for (sample, sample_labels), value in after.items():
        if sample == name and set(labels.items()) <= set(sample_labels):
            total += value - before.get((sample, sample_labels), 0.0)
    return total


def server_metrics(
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> dict[str, float]:
    if not after:
        return {}
    batches = metric_delta(after, before, "lkps_audit_batch_records_count")
    records = metric_delta(after, before, "lkps_audit_batch_records_sum")
    writes = metric_delta(after, before, "lkps_audit_write_seconds_count")
    write_time = metric_delta(after, before, "lkps_audit_write_seconds_sum")
    requests = metric_delta(
        after, before, "lkps_http_request_duration_seconds_count", route=SESSION_PATH
    )
    request_time = metric_delta(
        after, before, "lkps_http_request_duration_seconds_sum", route=SESSION_PATH
    )
    return {
        "audit_records": records,
        "audit_batches": batches,
        "audit_records_per_batch": round(records / batches, 1) if batches else 0.0,
        "audit_commit_ms_mean": round(1000 * write_time / writes, 2) if writes else 0.0,
        "server_session_start_ms_mean": round(1000 * request_time / requests, 2)
        if requests
        else 0.0,
        "token_cache_hits": metric_delta(
            after, before, "lkps_verified_token_cache_total", result="hit"
        ),
        "token_cache_misses": metric_delta(
            after, before, "lkps_verified_token_cache_total", result="miss"
        ),
        "rate_limited": metric_delta(after, before, "lkps_rate_limited_total"),
    }


@dataclass
class Context:
    args: argparse.Namespace
    out: Path
    children: procs.Children
    ids: Identities
    profile_spy: str | None = None
    server_pid: int = 0
    database: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)


def cpu_groups(root: int, workers: list[int]) -> dict[str, list[int]]:
    return {"server workers": workers, "server parent": [root]}


def harness_cpu() -> float:
    """This process: the Entra double, the agent's heartbeats, the samplers."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    ctx: Context, spec: ServerSpec, duration: float, *, measure: bool, profile_to: Path | None
) -> dict[str, Any]:
    args = ctx.args
    argv = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration:.0f}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "session_start.lua"),
        spec.url,
        "--",
        str(ctx.ids.tokens_file),
        ctx.ids.body,
        SESSION_PATH,
    ]
    root = ctx.server_pid
    workers = procs.worker_pids(root)
    generator_before = children_cpu()
    metrics_before = scrape(spec) if measure else {}
    idle_busy = wait_for_quiet(ctx, "the full-speed run") if measure else None
    sessions_before = database_sessions(ctx.database) if measure else 0
    harness_before = harness_cpu()
    postgres = procs.PostgresCpu(ctx.database).__enter__()
    sample_before = procs.CpuSample(cpu_groups(root, workers))
    proc = ctx.children.start(f"wrk-{spec.name}", argv, capture=True)
    spy = None
    if profile_to is not None and ctx.profile_spy:
        time.sleep(2)
        spy = ctx.children.start(
            f"py-spy-{spec.name}",
            profiles.py_spy_record(ctx.profile_spy, root, duration, profile_to),
        )
    try:
        stdout, _ = proc.communicate(timeout=duration + 60)
    finally:
        postgres.__exit__()
    sample_after = procs.CpuSample(cpu_groups(root, workers))
    generator_seconds = children_cpu() - generator_before
    ctx.children.running = [(n, p) for n, p in ctx.children.running if p is not proc]
    if spy is not None:
        spy.wait(timeout=60)
        ctx.children.stop(spy)
    line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{stdout}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    seconds = raw["duration_us"] / 1e6
    errors = raw["errors"]
    result = {
        "requests": raw["requests"],
        "throughput_rps": round(raw["requests"] / seconds, 1),
        "latency_ms": {k: round(v / 1000, 2) for k, v in raw["latency_us"].items()},
        "non_2xx": errors["status"],
        "socket_errors": errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        "cpu_cores": sample_after.shares_since(
            sample_before,
            {
                "postgres": postgres.seconds,
                "wrk": generator_seconds,
                "bench harness": harness_cpu() - harness_before,
            },
        ),
    }
    rps = result["throughput_rps"]
    cores = result["cpu_cores"]
    result["cpu_ms_per_request"] = {
        "server workers": round(1000 * cores["server workers"] / rps, 3) if rps else 0.0,
        "postgres": round(1000 * cores["postgres"] / rps, 3) if rps else 0.0,
    }
    if measure:
        result["server_metrics"] = server_metrics(scrape(spec), metrics_before)
        result["busy_cores_before"] = idle_busy
        if spec.kind == "lkps":
            time.sleep(0.6)  # the statistics collector's delay
            opened = database_sessions(ctx.database) - sessions_before
            result["db_connections_opened_per_s"] = round(opened / seconds, 1)
    return result


def run_paced(
    ctx: Context, spec: ServerSpec, rate: float | None = None, duration: float | None = None
) -> dict[str, Any]:
    args = ctx.args
    rate = rate or args.rate
    duration = duration or args.paced_duration
    argv = [
        sys.executable,
        str(BENCH / "paced.py"),
        "--port",
        str(spec.port),
        "--tokens",
        str(ctx.ids.tokens_file),
        "--body",
        ctx.ids.body,
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--warmup",
        "2",
        "--connections",
        "32",
    ]
    root = ctx.server_pid
    workers = procs.worker_pids(root)
    generator_before = children_cpu()
    metrics_before = scrape(spec)
    idle_busy = wait_for_quiet(ctx, "the fixed-rate run")
    sessions_before = database_sessions(ctx.database)
    harness_before = harness_cpu()
    postgres = procs.PostgresCpu(ctx.database).__enter__()
    sample_before = procs.CpuSample(cpu_groups(root, workers))
    proc = ctx.children.start(f"paced-{spec.name}", argv, capture=True)
    try:
        stdout, _ = proc.communicate(timeout=duration + 60)
    finally:
        postgres.__exit__()
    sample_after = procs.CpuSample(cpu_groups(root, workers))
    generator_seconds = children_cpu() - generator_before
    ctx.children.running = [(n, p) for n, p in ctx.children.running if p is not proc]
    if proc.returncode != 0:
        raise RuntimeError(f"paced.py failed ({proc.returncode}); see its log")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["cpu_cores"] = sample_after.shares_since(
        sample_before,
        {
            "postgres": postgres.seconds,
            "paced generator": generator_seconds,
            "bench harness": harness_cpu() - harness_before,
        },
    )
    if metrics_before:
        result["server_metrics"] = server_metrics(scrape(spec), metrics_before)
    result["busy_cores_before"] = idle_busy
    if spec.kind == "lkps":
        time.sleep(0.6)
        opened = database_sessions(ctx.database) - sessions_before
        result["db_connections_opened_per_s"] = round(opened / max(1.0, result["duration_s"]), 1)
    return result


def wait_for_quiet(ctx: Context, what: str) -> float:
    """Wait (at most --quiet-timeout seconds) until the machine is nearly idle with the
    server idle, so that other work on a shared machine does not skew a measurement.
    Returns the busy share (cores) seen last."""
    deadline = time.monotonic() + ctx.args.quiet_timeout
    waited = False
    while True:
        busy_before, _ = procs.system_busy_seconds()
        time.sleep(1.0)
        busy_after, _ = procs.system_busy_seconds()
        busy = busy_after - busy_before
        if busy <= ctx.args.quiet_cores or time.monotonic() >= deadline:
            if waited or busy > ctx.args.quiet_cores:
                say(
                    f"   machine busy {busy:.2f} cores before {what}"
                    + (" (waited; proceeding anyway)" if busy > ctx.args.quiet_cores else "")
                )
            return round(busy, 3)
        waited = True


def check_one_request(ctx: Context, spec: ServerSpec) -> None:
    token = ctx.ids.tokens_file.read_text().split("\n", 1)[0]
    response = httpx.post(
        spec.url + SESSION_PATH,
        content=ctx.ids.body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=10,
    )
    if response.status_code != 200 or "participant_token" not in response.json():
        raise RuntimeError(f"{spec.name}: {response.status_code} {response.text[:300]}")


def least_disturbed(ctx: Context, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `measure`; on a shared machine, run it again (up to --retries times) while
    processes outside the benchmark took more than --quiet-cores during it, and keep
    the least disturbed result. Each result records `other` (cores used by everything
    else) in its `cpu_cores`."""
    best: dict[str, Any] | None = None
    for attempt in range(ctx.args.retries + 1):
        result = measure()
        result["attempt"] = attempt + 1
        other = result["cpu_cores"].get("other", 0.0)
        if best is None or other < best["cpu_cores"].get("other", 0.0):
            best = result
        if other <= ctx.args.quiet_cores:
            break
        say(f"   (other processes used {other:.2f} cores during that run; measuring again)")
    assert best is not None
    return best


def warm_up(ctx: Context, spec: ServerSpec, max_rounds: int = 8) -> None:
    """wrk rounds of --warmup seconds; for LKPS, until the workers' verified-token
    caches hold every token (fewer than 1% misses in a round), as they would in
    production where clients reuse a token for its lifetime: the measured runs then
    see steady state, not the first RSA verification of each token in each worker."""
    for round_ in range(1, max_rounds + 1):
        before = scrape(spec)
        result = run_wrk(ctx, spec, ctx.args.warmup, measure=False, profile_to=None)
        metrics = server_metrics(scrape(spec), before)
        misses = metrics.get("token_cache_misses", 0.0)
        say(
            f"   warm-up {round_}: wrk {ctx.args.warmup:.0f} s, "
            f"{result['throughput_rps']:.0f} req/s"
            + (f", {misses:.0f} token verifications" if metrics else "")
        )
        if not metrics or misses < 0.01 * max(1, result["requests"]):
            return


def measure_server(
    ctx: Context, spec: ServerSpec, *, label: str, paced_repeats: int = 1, profile: bool = False
) -> dict[str, Any]:
    args = ctx.args
    say(f"\n== {label}: {spec.name}, {args.workers} workers, {spec.url}")
    proc = ctx.children.start(spec.name, spec.argv, env=spec.env, cwd=ROOT)
    ctx.server_pid = proc.pid
    keeper: AgentKeeper | None = None
    try:
        wait_ready(spec, proc)
        if spec.kind == "lkps":
            keeper = AgentKeeper(spec.url, ctx.ids.agent_token, ctx.ids.agent_id).__enter__()
            say(f"   agent present by {keeper.presence}")
        workers = procs.worker_pids(proc.pid)
        ready_memory = {str(pid): procs.memory_kb(pid) for pid in workers}
        say(
            f"   ready; worker pids {workers}; RSS at ready "
            + ", ".join(f"{m.get('VmRSS', 0) / 1024:.0f}" for m in ready_memory.values())
            + " MB"
        )
        check_one_request(ctx, spec)
        warm_up(ctx, spec)
        say(f"   full speed: wrk -t{args.threads} -c{args.connections} -d{args.duration:.0f}s")
        full = least_disturbed(
            ctx, lambda: run_wrk(ctx, spec, args.duration, measure=True, profile_to=None)
        )
        say(
            f"   -> {full['throughput_rps']:.0f} req/s, p50 {full['latency_ms']['p50']} ms, "
            f"p99 {full['latency_ms']['p99']} ms, non-2xx {full['non_2xx']}, "
            f"socket errors {full['socket_errors']}; CPU cores {full['cpu_cores']}"
            + (
                f"; new PostgreSQL connections {full['db_connections_opened_per_s']}/s"
                if "db_connections_opened_per_s" in full
                else ""
            )
        )
        paced_runs = []
        for i in range(paced_repeats):
            say(f"   fixed rate: {args.rate:.0f} req/s for {args.paced_duration:.0f} s (#{i + 1})")
            paced = least_disturbed(ctx, lambda: run_paced(ctx, spec))
            paced_runs.append(paced)
            say(
                f"   -> {paced['achieved_rate']} req/s, p50 {paced['latency_ms']['p50']} ms, "
                f"p99 {paced['latency_ms']['p99']} ms, max {paced['latency_ms']['max']} ms, "
                f"non-2xx {paced['non_2xx']}, errors {paced['errors']}; "
                f"generator {paced['self_check']['cpu_share_of_one_core']} of a core; "
                f"CPU cores {paced['cpu_cores']}"
            )
        sweep = []
        if spec.kind == "lkps" and label == "empty store" and args.sweep:
            for rate in (float(x) for x in args.sweep.split(",") if x.strip()):
                point = least_disturbed(
                    ctx,
                    lambda rate=rate: run_paced(ctx, spec, rate, args.sweep_duration),  # type: ignore[misc]
                )
                sweep.append(point)
                say(
                    f"   sweep {rate:.0f} req/s: achieved {point['achieved_rate']}, "
                    f"p50 {point['latency_ms']['p50']} ms, p99 {point['latency_ms']['p99']} ms, "
                    f"non-2xx {point['non_2xx']}, errors {sum(point['errors'].values())}"
                )
        compare = []
        if spec.kind == "lkps" and args.large_store and spec.name == "lkps-uvicorn":
            for i in range(paced_repeats):
                say(
                    f"   comparison rate: {args.compare_rate:.0f} req/s for "
                    f"{args.paced_duration:.0f} s (#{i + 1})"
                )
                point = least_disturbed(ctx, lambda: run_paced(ctx, spec, args.compare_rate))
                compare.append(point)
                say(
                    f"   -> {point['achieved_rate']} req/s, p50 {point['latency_ms']['p50']} ms, "
                    f"p99 {point['latency_ms']['p99']} ms, max {point['latency_ms']['max']} ms"
                )
        profiled: dict[str, Any] | None = None
        if profile and ctx.profile_spy:
            slug = f"{spec.name}-{label}".replace(" ", "-").replace(",", "+")
            profile_path = ctx.out / f"profile-{slug}.txt"
            say(f"   profile: wrk -d{args.duration:.0f}s again, py-spy recording the workers")
            profiled = run_wrk(ctx, spec, args.duration, measure=True, profile_to=profile_path)
            if profile_path.exists():
                summary = profiles.summarize(
                    profile_path, only_processes=procs.worker_pids(proc.pid)
                )
                profiled["summary"] = summary
                (ctx.out / f"{profile_path.stem}-summary.txt").write_text(profiles.as_text(summary))
                say(
                    f"   -> {profiled['throughput_rps']:.0f} req/s under py-spy; "
                    f"{ctx.out / (profile_path.stem + '-summary.txt')}"
                )
        workers = procs.worker_pids(proc.pid)
        memory = {str(pid): procs.memory_kb(pid) for pid in workers}
        parent_memory = procs.memory_kb(proc.pid) if proc.pid not in workers else {}
        peak_mb = max((m.get("VmHWM", 0) for m in memory.values()), default=0) / 1024
        say(
            "   peak RSS per worker (VmHWM): "
            + ", ".join(f"{pid}: {m.get('VmHWM', 0) / 1024:.0f} MB" for pid, m in memory.items())
        )
        result: dict[str, Any] = {
            "label": label,
            "server": spec.name,
            "kind": spec.kind,
            "workers": args.workers,
            "full_speed": full,
            "paced": paced_runs,
            "sweep": sweep,
            "compare": compare,
            "memory_kb": memory,
            "memory_at_ready_kb": ready_memory,
            "parent_memory_kb": parent_memory,
            "peak_rss_mb_per_worker": round(peak_mb, 1),
        }
        if profiled is not None:
            result["profiled_run"] = profiled
        if keeper is not None:
            result["agent_presence"] = keeper.presence
            result["agent_heartbeats"] = keeper.heartbeats
            result["agent_keeper_failures"] = keeper.failures
            if keeper.worker is not None:
                result["agent_worker_connects"] = keeper.worker.connects
        ctx.results.append(result)
        return result
    finally:
        if keeper is not None:
            keeper.__exit__()
        ctx.children.stop(proc, timeout=40)


@contextlib.contextmanager
def serving(ctx: Context, spec: ServerSpec) -> Iterator[int]:
    """`spec` started, ready, its agent kept present and its token caches warm; yields
    its pid, and stops it on the way out."""
    proc = ctx.children.start(spec.name, spec.argv, env=spec.env, cwd=ROOT)
    keeper: AgentKeeper | None = None
    try:
        wait_ready(spec, proc)
        keeper = AgentKeeper(spec.url, ctx.ids.agent_token, ctx.ids.agent_id).__enter__()
        ctx.server_pid = proc.pid
        check_one_request(ctx, spec)
        warm_up(ctx, spec)
        yield proc.pid
    finally:
        if keeper is not None:
            keeper.__exit__()
        ctx.children.stop(proc, timeout=40)


def interleaved(ctx: Context, servers: list[tuple[ServerSpec, str]], rounds: int) -> dict[str, Any]:
    """Before/after on a machine whose speed drifts: both servers run at once (each idle
    while the other is measured), and `rounds` full-speed and fixed-rate runs alternate
    between them, the order swapped every round, so that drift falls on both alike.
    Medians per server; `servers`: (spec, its database)."""
    args = ctx.args
    runs: dict[str, list[dict[str, Any]]] = {spec.name: [] for spec, _ in servers}
    with contextlib.ExitStack() as stack:
        pids = {}
        for spec, database in servers:
            say(f"\n== interleaved: starting {spec.name}, {args.workers} workers, {spec.url}")
            ctx.database = database
            pids[spec.name] = stack.enter_context(serving(ctx, spec))
        for round_ in range(rounds):
            order = servers if round_ % 2 == 0 else servers[::-1]
            for spec, database in order:
                ctx.server_pid, ctx.database = pids[spec.name], database
                full = run_wrk(ctx, spec, args.duration, measure=True, profile_to=None)
                paced = run_paced(ctx, spec)
                runs[spec.name].append({"full_speed": full, "paced": paced})
                say(
                    f"   round {round_ + 1} {spec.name}: {full['throughput_rps']:.0f} req/s, "
                    f"worker CPU {full['cpu_ms_per_request']['server workers']} ms/request, "
                    f"PostgreSQL {full['cpu_ms_per_request']['postgres']} ms/request; "
                    f"{args.rate:.0f} req/s p99 {paced['latency_ms']['p99']} ms; "
                    f"other {full['cpu_cores'].get('other', 0.0)} cores"
                )
    summary: dict[str, Any] = {}
    for name, measured in runs.items():
        summary[name] = {
            "throughput_rps": statistics.median(
                r["full_speed"]["throughput_rps"] for r in measured
            ),
            "worker_cpu_ms": statistics.median(
                r["full_speed"]["cpu_ms_per_request"]["server workers"] for r in measured
            ),
            "postgres_cpu_ms": statistics.median(
                r["full_speed"]["cpu_ms_per_request"]["postgres"] for r in measured
            ),
            "paced_p99_ms": statistics.median(r["paced"]["latency_ms"]["p99"] for r in measured),
            "runs": measured,
        }
    (before, _), (after, _) = servers
    a, b = summary[before.name], summary[after.name]
    say(f"\ninterleaved, {rounds} rounds, medians:")
    for name in (before.name, after.name):
        m = summary[name]
        say(
            f"   {name}: {m['throughput_rps']:.0f} req/s, worker CPU {m['worker_cpu_ms']:.3f} "
            f"ms/request, PostgreSQL {m['postgres_cpu_ms']:.3f} ms/request, "
            f"p99 at {args.rate:.0f} req/s {m['paced_p99_ms']:.1f} ms"
        )
    say(
        f"   change: throughput {100 * (b['throughput_rps'] / a['throughput_rps'] - 1):+.1f} %, "
        f"worker CPU per request {100 * (b['worker_cpu_ms'] / a['worker_cpu_ms'] - 1):+.1f} %, "
        f"p99 at {args.rate:.0f} req/s {a['paced_p99_ms']:.1f} -> {b['paced_p99_ms']:.1f} ms"
    )
    return summary


# --- Report ----------------------------------------------------------------------


def paced_summary(result: dict[str, Any]) -> tuple[float, float, float]:
    """Median over repeats of p50, p99 and max (ms)."""
    runs = result["paced"]
    return (
        round(statistics.median(r["latency_ms"]["p50"] for r in runs), 2),
        round(statistics.median(r["latency_ms"]["p99"] for r in runs), 2),
        round(statistics.median(r["latency_ms"]["max"] for r in runs), 2),
    )


def table(results: list[dict[str, Any]], rate: float) -> str:
    lines = [
        f"| run | full speed req/s | wrk p50 / p99 ms | {rate:.0f} req/s: p50 / p99 / max ms "
        "| non-2xx / errors | peak RSS per worker MB | CPU cores: workers / postgres / "
        "load generator / other | worker CPU ms per request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        full = r["full_speed"]
        p50, p99, worst = paced_summary(r)
        non_2xx = full["non_2xx"] + sum(p["non_2xx"] for p in r["paced"])
        errors = full["socket_errors"] + sum(sum(p["errors"].values()) for p in r["paced"])
        rss = " / ".join(f"{m.get('VmHWM', 0) / 1024:.0f}" for m in r["memory_kb"].values())
        cores = full["cpu_cores"]
        lines.append(
            f"| {r['server']} ({r['label']}) | {full['throughput_rps']:,.0f} "
            f"| {full['latency_ms']['p50']} / {full['latency_ms']['p99']} "
            f"| {p50} / {p99} / {worst} | {non_2xx} / {errors} | {rss} "
            f"| {cores.get('server workers', 0):.2f} / {cores.get('postgres', 0):.2f} / "
            f"{cores.get('wrk', 0):.2f} / {cores.get('other', 0):.2f} "
            f"| {full.get('cpu_ms_per_request', {}).get('server workers', 0):.2f} |"
        )
    return "\n".join(lines)


def compare_latency(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]]) -> tuple[bool, str]:
    """Whether p50 and p99 moved by more than the noise: the spread between repeats
    within either state, and at least 10% and 1 ms."""
    a50 = [r["latency_ms"]["p50"] for r in runs_a]
    a99 = [r["latency_ms"]["p99"] for r in runs_a]
    b50 = [r["latency_ms"]["p50"] for r in runs_b]
    b99 = [r["latency_ms"]["p99"] for r in runs_b]
    noise50 = max(max(a50) - min(a50), max(b50) - min(b50), 0.1 * statistics.mean(a50), 1.0)
    noise99 = max(max(a99) - min(a99), max(b99) - min(b99), 0.1 * statistics.mean(a99), 1.0)
    d50 = statistics.mean(b50) - statistics.mean(a50)
    d99 = statistics.mean(b99) - statistics.mean(a99)
    text = (
        f"p50 {statistics.mean(a50):.2f} -> {statistics.mean(b50):.2f} ms "
        f"(diff {d50:+.2f}, noise {noise50:.2f}); "
        f"p99 {statistics.mean(a99):.2f} -> {statistics.mean(b99):.2f} ms "
        f"(diff {d99:+.2f}, noise {noise99:.2f})"
    )
    return abs(d50) <= noise50 and abs(d99) <= noise99, text


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    def first(predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        return next((r for r in results if predicate(r)), None)

    lkps = first(lambda r: r["server"] == "lkps-uvicorn" and r["label"] == "empty store")
    bare = first(lambda r: r["kind"] == "bare")
    durable = first(lambda r: r["kind"] == "bare-durable")
    large = first(lambda r: r["label"] == "large store")
    lines: list[str] = []

    def mark(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    def ratio_line(yardstick: dict[str, Any], name: str, target: str) -> str:
        ours, theirs = (r["full_speed"]["throughput_rps"] for r in (lkps, yardstick))
        if yardstick["full_speed"]["non_2xx"]:
            return f"{name} answered {yardstick['full_speed']['non_2xx']:,} non-2xx: no ratio"
        return (
            f"LKPS / {name} throughput = {ours:,.0f} / {theirs:,.0f} = {ours / theirs:.2f} {target}"
        )

    if lkps and bare:
        ratio = lkps["full_speed"]["throughput_rps"] / bare["full_speed"]["throughput_rps"]
        target = f"(target >= {TARGETS['ratio']}): {mark(ratio >= TARGETS['ratio'])}"
        lines.append(ratio_line(bare, "bare", target))
    if lkps and durable:
        note = "(one read, one committed insert per request; the yardstick proposed instead)"
        lines.append(ratio_line(durable, "bare + durable", note))
    if lkps:
        rps = lkps["full_speed"]["throughput_rps"]
        lines.append(
            f"session starts/s with PostgreSQL audit = {rps:,.0f} "
            f"(target >= {TARGETS['throughput']:,.0f}): {mark(rps >= TARGETS['throughput'])}"
        )
        _, p99, _ = paced_summary(lkps)
        lines.append(
            f"p99 at {lkps['paced'][0]['target_rate']:.0f} req/s = {p99} ms "
            f"(target <= {TARGETS['p99_ms']:.0f} ms): {mark(p99 <= TARGETS['p99_ms'])}"
        )
        rss = max(r["peak_rss_mb_per_worker"] for r in results if r["kind"] == "lkps")
        lines.append(
            f"peak RSS per LKPS worker = {rss:.0f} MB (target <= {TARGETS['rss_mb']:.0f} MB): "
            f"{mark(rss <= TARGETS['rss_mb'])}"
        )
    baseline = first(lambda r: r["server"].startswith("lkps-baseline"))
    if lkps and baseline:
        before, after = (r["full_speed"]["throughput_rps"] for r in (baseline, lkps))
        (_, p99_before, _), (_, p99_after, _) = paced_summary(baseline), paced_summary(lkps)
        change = 100 * (after - before) / before
        lines.append(
            f"this checkout vs {baseline['server']}: full speed {before:,.0f} -> {after:,.0f} "
            f"req/s ({change:+.1f}%), p99 at {lkps['paced'][0]['target_rate']:.0f} req/s "
            f"{p99_before} -> {p99_after} ms (allowed: -10 % throughput): {mark(change >= -10)}"
        )
    if lkps and large:
        full_a = lkps["full_speed"]["throughput_rps"]
        full_b = large["full_speed"]["throughput_rps"]
        verdict_ok = True
        for key in ("compare", "paced"):
            runs_a, runs_b = lkps.get(key) or [], large.get(key) or []
            if not runs_a or not runs_b:
                continue
            ok, text = compare_latency(runs_a, runs_b)
            verdict_ok = verdict_ok and ok
            lines.append(
                f"large store vs empty at {runs_a[0]['target_rate']:.0f} req/s: {text}: "
                f"{'within noise' if ok else 'BEYOND NOISE'}"
            )
        lines.append(
            f"large store vs empty, full speed: {full_a:,.0f} -> {full_b:,.0f} req/s "
            f"({100 * (full_b - full_a) / full_a:+.1f}%); session-start latency unchanged "
            f"within noise: {mark(verdict_ok)}"
        )
    return lines


# --- Main ------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="LKPS session-start benchmark (127.0.0.1 only).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("LKPS_WORKERS", "2")),
        help="worker processes of every server [LKPS_WORKERS]",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="full-speed run, seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="wrk warm-up, seconds")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rate", type=float, default=500.0, help="fixed-rate run, req/s")
    parser.add_argument("--paced-duration", type=float, default=20.0, help="seconds")
    parser.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="fixed-rate runs per server (default: 1, or 2 with --large-store to show the noise)",
    )
    parser.add_argument(
        "--sweep",
        default="",
        metavar="RATES",
        help="also fixed-rate runs of LKPS at these rates, e.g. '100,200,300,400'",
    )
    parser.add_argument("--sweep-duration", type=float, default=10.0, help="seconds each")
    parser.add_argument(
        "--large-store",
        action="store_true",
        help="also measure LKPS after loading --audit-rows audit records and --agents agents",
    )
    parser.add_argument(
        "--compare-rate",
        type=float,
        default=200.0,
        help="with --large-store, also fixed-rate runs at this rate in both states "
        "(well below saturation, where latency is stable enough to compare)",
    )
    parser.add_argument("--audit-rows", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--granian", action="store_true", help="also LKPS under granian")
    parser.add_argument("--redis", action="store_true", help="also LKPS with Redis limits")
    parser.add_argument(
        "--whatif",
        action="append",
        default=[],
        metavar="CHANGES",
        help="also LKPS with bench/whatif.py changes, e.g. 'pool,presence-cache' (repeatable)",
    )
    parser.add_argument(
        "--baseline",
        default="",
        metavar="REV",
        help="also LKPS at git revision REV, measured first: before/after in one run",
    )
    parser.add_argument(
        "--interleave",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="with --baseline: both servers at once, ROUNDS alternating full-speed and "
        "fixed-rate runs each, medians (for a machine whose speed drifts); nothing else",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy LKPS at full speed")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare endpoint")
    parser.add_argument(
        "--gateway",
        action="store_true",
        help="LKPS in gateway mode before the LiveKit double, the agent present by a worker "
        "connected through it (a baseline without a gateway: by heartbeats)",
    )
    parser.add_argument(
        "--quiet-cores",
        type=float,
        default=0.25,
        help="before each measurement, wait until the machine uses at most this many cores",
    )
    parser.add_argument("--quiet-timeout", type=float, default=180.0, help="seconds to wait")
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="re-measure a run this many "
        "times while other processes used more than --quiet-cores during it",
    )
    parser.add_argument("--out", type=Path, default=None, help="default bench/out/<time>")
    args = parser.parse_args()
    if args.repeats <= 0:
        args.repeats = 2 if args.large_store else 1
    return args


def find_py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    candidate = Path.home() / ".local" / "bin" / "py-spy"
    return str(candidate) if candidate.exists() else None


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(
                ["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "packages")
    return {
        "lkps_commit": git("rev-parse", "--short", "HEAD")
        + (" + uncommitted changes under packages/" if changed else ""),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(int(memory) / 2**20, 1),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
    }


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out or BENCH / "out" / stamp
    out.mkdir(parents=True, exist_ok=True)
    children = procs.Children(out)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    info = machine()
    say(f"LKPS benchmark -> {out}")
    say(f"machine: {info}")
    try:
        say(f"PostgreSQL: {ensure_postgres()}")
        with contextlib.ExitStack() as stack:
            database = stack.enter_context(bench_database())
            say(f"database {database} migrated")
            entra = EntraDouble()
            entra_server = stack.enter_context(ServerThread(entra.asgi_app()))
            ids = make_identities(entra, entra_server.url, out)
            say(f"Entra double at {entra_server.url}; {USERS} user tokens, agent {ids.agent_id}")
            if args.gateway:
                secret = secrets.token_urlsafe(36)
                ids.livekit_double = (start_livekit_double(children, secret)[0], secret)
                say(f"gateway mode: LiveKit double at {ids.livekit_double[0]}")
            ctx = Context(
                args,
                out,
                children,
                ids,
                profile_spy=find_py_spy(),
                results=results,
                database=database,
            )
            if args.profile and not ctx.profile_spy:
                say("py-spy not found (uv tool install py-spy): no profile")
            if args.baseline:
                source = baseline_source(out, args.baseline)
                stack.callback(
                    subprocess.run,
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(source)],
                    check=False,
                )
                baseline_db = stack.enter_context(
                    bench_database(source / "packages" / "server" / "src")
                )
                spec = lkps_baseline(ids, baseline_db, args.workers, out, args.baseline, source)
                if args.interleave:
                    current = lkps_uvicorn(ids, database, args.workers, out, False, "lkps-uvicorn")
                    summary = interleaved(
                        ctx, [(spec, baseline_db), (current, database)], args.interleave
                    )
                    (out / "interleaved.json").write_text(json.dumps(summary, indent=2))
                    return 0
                measure_server(
                    ctx,
                    spec,
                    label="empty store",
                    paced_repeats=args.repeats,
                    profile=args.profile,
                )
            measure_server(
                ctx,
                lkps_uvicorn(ids, database, args.workers, out, False, "lkps-uvicorn"),
                label="empty store",
                paced_repeats=args.repeats,
                profile=args.profile,
            )
            if not args.no_bare:
                measure_server(ctx, bare_uvicorn(args.workers), label="bare", paced_repeats=1)
                measure_server(
                    ctx,
                    bare_durable_uvicorn(args.workers, database),
                    label="bare + durable",
                    paced_repeats=1,
                )
            if args.granian:
                measure_server(
                    ctx,
                    lkps_granian(ids, database, args.workers, out, False, "lkps-granian"),
                    label="empty store",
                    paced_repeats=args.repeats,
                    profile=args.profile,
                )
            if args.redis:
                measure_server(
                    ctx,
                    lkps_uvicorn(ids, database, args.workers, out, True, "lkps-uvicorn-redis"),
                    label="empty store",
                    paced_repeats=args.repeats,
                )
            for changes in args.whatif:
                measure_server(
                    ctx,
                    lkps_whatif(ids, database, args.workers, out, changes),
                    label="empty store",
                    paced_repeats=args.repeats,
                    profile=args.profile,
                )
            if args.large_store:
                say(f"\n== loading {args.audit_rows:,} audit rows and {args.agents:,} agents")
                report = asyncio.run(
                    large_store.load(
                        f"postgresql://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{database}",
                        audit_count=args.audit_rows,
                        agent_count=args.agents,
                        extra_agent_ids=[ids.agent_id],
                    )
                )
                say(f"   loaded: {report.as_json()}")
                result = measure_server(
                    ctx,
                    lkps_uvicorn(ids, database, args.workers, out, False, "lkps-uvicorn"),
                    label="large store",
                    paced_repeats=args.repeats,
                    profile=args.profile,
                )
                result["load"] = report.as_json()
    except KeyboardInterrupt:
        say("\ninterrupted: stopping everything")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        children.stop_all()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    summary = [
        f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gb']} GB, "
        f"load average at start {' '.join(info['loadavg_at_start'])}; "
        f"LKPS at {info['lkps_commit']}",
        f"settings: {args.workers} workers; wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration:.0f}s after {args.warmup:.0f} s warm-up; fixed rate {args.rate:.0f} "
        f"req/s for {args.paced_duration:.0f} s x {args.repeats}; agent present by "
        + ", ".join(
            f"{r['server']}: {r['agent_presence']}" for r in results if "agent_presence" in r
        ),
        "",
        table(results, args.rate),
        "",
        *verdicts(results),
        "",
        f"total time {time.monotonic() - started:.0f} s",
    ]
    text = "\n".join(summary)
    (out / "summary.md").write_text(text + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {"machine": info, "args": vars(args) | {"out": str(out)}, "results": results},
            indent=2,
            default=str,
        )
    )
    say("\n" + text)
    say(f"\nresults: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
