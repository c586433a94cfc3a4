"""CPU cost of each step of a session start, one at a time, in one process.

    python3 -m uv run python bench/micro.py
    python3 -m uv run python bench/micro.py --ab /tmp/lkps-before/packages/server/src

CPU time (time.process_time) per operation, so the figures hold on a shared machine
where wall-clock throughput does not; database steps also report the PostgreSQL
backends' CPU (/proc/<pid>/schedstat of this database's backends) and the wall time
per operation, done one after another on an idle connection (round trips included).
Uses its own throwaway PostgreSQL database, like bench/run.py, and a SQLite file.

`--ab DIR` compares two versions of LKPS: it runs this script alternately with the
`lkps` package found in DIR (put first on PYTHONPATH; e.g. the server sources of an
earlier commit, from `git archive HEAD packages/server/src | tar -x -C /tmp/lkps-before`)
and with the installed one, `--rounds` times each, interleaved so that the load of a
shared machine falls on both alike; it prints each step's median and range. Only
APIs that both versions have are used (`Database`, `create_engine`, `AgentRegistry`,
`AuditLog`), so the "LKPS" rows measure whichever code is imported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import large_store
import procs
import run
from pydantic import SecretStr
from sqlalchemy.dialects.postgresql import asyncpg as postgresql_asyncpg
from sqlalchemy.ext.asyncio import create_async_engine

from lkps.agents import AgentRegistry
from lkps.api.schemas import SessionStartRequest, SessionStartResponse
from lkps.audit import AuditEntry, AuditEvent, AuditLog, Outcome
from lkps.audit.chain import canonical_json, record_hash
from lkps.clock import SystemClock
from lkps.livekit import TokenMinter, dispatch_room_config
from lkps.sessions.metadata import ClientMetadata, dispatch_metadata
from lkps.sessions.room_names import new_room_name
from lkps.store import Database, registrations
from lkps.store.engine import create_engine
from lkps.store.migrate import upgrade
from lkps_testkit import EntraDouble

# (client CPU µs, PostgreSQL backends' CPU µs, wall µs) per operation.
Figures = tuple[float, float, float]

_TYPES = (
    "bigint", "text", "timestamptz", "text", "text", "integer", "text", "text", "text",
    "text", "text", "text", "text", "text", "text", "text", "text", "text", "text",
)  # fmt: skip


def present_agent_statement() -> Any:
    """The SELECT `present_agent` runs (as `_PRESENT_AGENT` in an lkps from before it
    was public, which `--ab` may import)."""
    found = vars(registrations)
    return found.get("PRESENT_AGENT", found.get("_PRESENT_AGENT"))


def bench_minter(clock: SystemClock) -> TokenMinter:
    """A minter; its secret a `SecretStr`, or a `str` for an lkps from before the minter
    took a `SecretStr` (which `--ab` may import)."""
    secret = "s" * 48
    annotation = str(inspect.signature(TokenMinter).parameters["api_secret"].annotation)
    wrapped: Any = SecretStr(secret) if "SecretStr" in annotation else secret
    return TokenMinter("APIbench", wrapped, clock)


def cpu_us(operation: Callable[[], Any], repeat: int = 5000) -> float:
    operation()
    started = time.process_time()
    for _ in range(repeat):
        operation()
    return (time.process_time() - started) / repeat * 1e6


class Backends:
    """CPU time of the PostgreSQL backends serving one database (none for SQLite)."""

    def __init__(self, database: str | None) -> None:
        self._database = database

    async def seconds(self) -> float:
        if self._database is None:
            return 0.0
        admin = await asyncpg.connect(run.ADMIN_DSN, ssl=False)
        try:
            pids = await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1", self._database
            )
        finally:
            await admin.close()
        return sum(procs.oncpu_seconds(row["pid"]) for row in pids)


async def acpu_us(
    operation: Callable[[], Awaitable[Any]], backends: Backends, repeat: int = 2000
) -> Figures:
    """(client CPU µs, backend CPU µs, wall µs) per awaited operation, sequentially.

    The backends are those alive after one warm-up operation (a pool keeps its
    connections), sampled before and after the timed loop."""
    await operation()
    backend_before = await backends.seconds()
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        await operation()
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started_wall
    backend = await backends.seconds() - backend_before
    return cpu / repeat * 1e6, backend / repeat * 1e6, wall / repeat * 1e6


def per_record(figures: Figures, records: int) -> Figures:
    cpu, backend, wall = figures
    return cpu / records, backend / records, wall / records


def pure_python() -> dict[str, float]:
    clock = SystemClock()
    minter = bench_minter(clock)
    agent = str(uuid.uuid4())
    metadata = {"language": "en", "topic": "billing", "bench": True}
    body = json.dumps({"agent_entra_app_id": agent, "metadata": metadata}).encode()
    entra = EntraDouble()
    token = entra.user_token(audience="api://x", client_app_id=str(uuid.uuid4()))
    public = entra.signing_key.private_key.public_key()

    def mint() -> Any:
        return minter.participant_token(
            identity="bench_user0001",
            name="Bench User",
            room=new_room_name("bench_user0001", agent, clock.now()),
            room_config=dispatch_room_config(
                agent, dispatch_metadata(ClientMetadata(json.dumps(metadata))), max_participants=2
            ),
            ttl=timedelta(seconds=900),
        )

    def verify() -> Any:
        return jwt.decode(
            token,
            public,
            algorithms=["RS256"],
            audience="api://x",
            options={"verify_iss": False, "verify_iat": False},
        )

    row = {
        "seq": 1,
        "record_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC),
        "event": "session.start",
        "outcome": "granted",
        "status": 200,
        "reason": "client pre-authorized (file)",
        "request_id": uuid.uuid4().hex,
        "actor_tenant_id": str(uuid.uuid4()),
        "actor_object_id": str(uuid.uuid4()),
        "actor_cwid": "bench.user0001",
        "client_app_id": str(uuid.uuid4()),
        "agent_id": agent,
        "room_name": "x" * 90,
        "registration_id": None,
        "client_ip": "127.0.0.1",
        "details": canonical_json({"via": "start", "session_id": str(uuid.uuid4())}),
        "prev_hash": "0" * 64,
    }
    issued = mint()
    response = SessionStartResponse(
        room_name="x" * 90,
        livekit_url="wss://x",
        participant_token=issued.jwt,
        session_id=str(uuid.uuid4()),
        expires_at=issued.expires_at,
    )
    return {
        "mint participant token (livekit-api)": cpu_us(mint),
        "verify RS256 Entra token (cache miss only)": cpu_us(verify, 2000),
        "verified-token cache key (sha256 of the token)": cpu_us(
            lambda: hashlib.sha256(token.encode()).digest()
        ),
        "parse + validate body (json + pydantic)": cpu_us(
            lambda: SessionStartRequest.model_validate(json.loads(body))
        ),
        "record_hash (one audit record)": cpu_us(lambda: record_hash(row)),
        "serialize response model (pydantic)": cpu_us(lambda: response.model_dump_json().encode()),
    }


def _asgi_scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/session/start",
        "raw_path": b"/api/session/start",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", b"Bearer " + b"x" * 900),
            (b"content-type", b"application/json"),
            (b"content-length", b"80"),
            (b"x-request-id", b"gateway-0123456789abcdef"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def in_process() -> dict[str, float]:
    """LKPS's own per-request layers without the framework: the two ASGI middlewares
    around an endpoint that answers at once, one audit log line, the audit metrics."""
    from starlette.routing import Route

    from lkps.api.metrics_middleware import MetricsMiddleware
    from lkps.api.middleware import RequestIdMiddleware
    from lkps.audit.log import count_record
    from lkps.identity.validator import VerifiedTokenCache
    from lkps.logs import JsonFormatter, request_id_var
    from lkps.sessions.metrics import count_session_start

    route = Route("/api/session/start", endpoint=lambda request: None, methods=["POST"])
    body = b'{"room_name":"' + b"x" * 90 + b'","participant_token":"' + b"t" * 600 + b'"}'

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        scope["route"] = route
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    stack = RequestIdMiddleware(MetricsMiddleware(endpoint))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    def request() -> None:
        coroutine = stack(_asgi_scope(), receive, send)
        try:
            coroutine.send(None)
        except StopIteration:
            return
        raise RuntimeError("the middleware stack suspended")

    def bare() -> None:
        with contextlib.suppress(StopIteration):
            endpoint(_asgi_scope(), receive, send).send(None)

    formatter = JsonFormatter()
    token_cache = VerifiedTokenCache(10)
    clock = SystemClock()
    entry = audit_entry(clock, str(uuid.uuid4()))
    record = logging.LogRecord(
        "lkps.audit", logging.INFO, __file__, 1, "%s %s", ("session.start", "granted"), None
    )
    for key, value in {
        "audit_event": "session.start",
        "outcome": "granted",
        "status": 200,
        "reason": "client pre-authorized (file)",
        "agent_id": entry.agent_id,
        "client_app_id": str(uuid.uuid4()),
        "cwid": "bench.user0001",
        "room_name": "x" * 90,
        "audit_seq": 12345,
    }.items():
        setattr(record, key, value)
    request_id_var.set(uuid.uuid4().hex)
    stack_us, bare_us = [], []
    for _ in range(5):  # interleaved: the stack's own cost is the difference
        stack_us.append(cpu_us(request, 20000))
        bare_us.append(cpu_us(bare, 20000))
    return {
        "middleware stack (request id + metrics), raw ASGI": statistics.median(stack_us)
        - statistics.median(bare_us),
        "JSON log line (audit record, JsonFormatter)": cpu_us(
            lambda: formatter.format(record), 20000
        ),
        "audit metrics (count_record + count_session_start)": cpu_us(
            lambda: (count_record(entry), count_session_start(entry)), 20000
        ),
        "verified-token cache lookup + metric": cpu_us(
            lambda: token_cache.get(b"\0" * 32, 0.0), 20000
        ),
    }


def audit_entry(clock: SystemClock, agent_id: str) -> AuditEntry:
    return AuditEntry(
        event=AuditEvent.SESSION_START,
        outcome=Outcome.GRANTED,
        status=200,
        occurred_at=clock.now(),
        record_id=str(uuid.uuid4()),
        reason="bench",
        actor_cwid="bench.user0001",
        agent_id=agent_id,
        room_name="x" * 90,
        details={"via": "start", "session_id": str(uuid.uuid4()), "metadata_bytes": 40},
    )


def audit_keys() -> dict[str, object]:
    """A keyed chain where the imported LKPS has one (from the keyed audit chain on),
    as `lkps serve` always runs it; nothing for an earlier LKPS."""
    if "keys" not in inspect.signature(AuditLog).parameters:
        return {}
    from lkps.audit.keys import AuditKeys, chain_key

    return {"keys": AuditKeys(chain_key(b"bench-audit-key-" * 2))}


async def lkps_steps(db: Database, backends: Backends, label: str) -> dict[str, Figures]:
    """LKPS's own presence check and audit writer, as the imported `lkps` does them."""
    clock = SystemClock()
    agent_id = str(uuid.uuid4())
    registry = AgentRegistry(db, clock, presence_ttl=3600, default_enforce=True)
    await registry.register(agent_id, enforce_client_authz=True)
    assert await registry.presence(agent_id) is not None, "the agent is present"
    results = {
        f"presence, LKPS ({label})": await acpu_us(lambda: registry.presence(agent_id), backends)
    }
    audit = AuditLog(db, **audit_keys())
    await audit.start()
    results[f"audit, LKPS's writer, batches of 1 ({label})"] = await acpu_us(
        lambda: audit.append(audit_entry(clock, agent_id)), backends, 1000
    )

    async def batch_of_32() -> None:
        await asyncio.gather(*(audit.append(audit_entry(clock, agent_id)) for _ in range(32)))

    results[f"audit, LKPS's writer, per record in batches of 32 ({label})"] = per_record(
        await acpu_us(batch_of_32, backends, 100), 32
    )
    await audit.stop()
    assert (await audit.verify()).ok
    return results


async def references(name: str, backends: Backends) -> dict[str, Figures]:
    """Yardsticks: what the same work costs done other ways (no TLS, no pre-ping; the
    presence SELECT LKPS builds, run without LKPS's execution path)."""
    url = run.sqlalchemy_url(name)
    clock = SystemClock()
    agent_id = str(uuid.uuid4())
    db = Database(create_engine(url))
    await AgentRegistry(db, clock, presence_ttl=3600, default_enforce=True).register(agent_id)
    await db.dispose()
    results: dict[str, Figures] = {}
    plain = Database(
        create_async_engine(url + "?ssl=disable", pool_size=5, max_overflow=0, pool_pre_ping=False)
    )

    async def empty_session() -> None:
        async with plain.session():
            pass

    results["ref: ORM session + transaction, no statement"] = await acpu_us(empty_session, backends)
    # The statement LKPS runs, not a copy of it: a copy drifts (one here lacked the
    # worker_connected condition presence gained).
    prebuilt = present_agent_statement()

    async def core_prebuilt() -> None:
        async with plain.engine.connect() as connection:
            result = await connection.execute(
                prebuilt, {"agent_id": agent_id, "now": datetime.now(UTC)}
            )
            assert result.first() is not None, "the agent is present"

    results[
        "ref: presence, Core statement built once, connect() with BEGIN/ROLLBACK"
    ] = await acpu_us(core_prebuilt, backends)
    autocommit = plain.engine.execution_options(isolation_level="AUTOCOMMIT")

    async def core_autocommit() -> None:
        async with autocommit.connect() as connection:
            result = await connection.execute(
                prebuilt, {"agent_id": agent_id, "now": datetime.now(UTC)}
            )
            assert result.first() is not None, "the agent is present"

    results["ref: presence, Core statement built once, autocommit"] = await acpu_us(
        core_autocommit, backends
    )
    await plain.dispose()
    connection = await asyncpg.connect(
        f"postgresql://{run.PG_USER}:{run.PG_PASSWORD}@{run.PG_HOST}:{run.PG_PORT}/{name}",
        ssl=False,
    )
    # The same statement as SQLAlchemy renders it for asyncpg ($1, $2, in this order).
    compiled = prebuilt.compile(dialect=postgresql_asyncpg.dialect())
    assert compiled.positiontup == ["agent_id", "now"], compiled.positiontup
    statement = await connection.prepare(str(compiled))
    assert await statement.fetchrow(agent_id, datetime.now(UTC)) is not None
    results["ref: presence, one prepared asyncpg statement, autocommit"] = await acpu_us(
        lambda: statement.fetchrow(agent_id, datetime.now(UTC)), backends
    )
    columns = list(large_store.AUDIT_COLUMNS)
    arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_TYPES))
    insert = await connection.prepare(
        f"INSERT INTO audit_records ({', '.join(columns)}) SELECT * FROM unnest({arrays})"  # noqa: S608 (constant names)
    )

    async def raw_batch_of_32() -> None:
        async with connection.transaction():
            head = await connection.fetchrow(
                "UPDATE audit_chain_head SET seq = seq WHERE id = 1 RETURNING seq, hash"
            )
            assert head is not None
            seq, previous = int(head["seq"]), str(head["hash"])
            rows = []
            for _ in range(32):
                seq += 1
                item = audit_entry(clock, agent_id)
                row: dict[str, Any] = {
                    **{c: getattr(item, c, None) for c in columns},
                    "event": str(item.event),
                    "outcome": str(item.outcome),
                    "details": canonical_json(item.details),
                    "seq": seq,
                    "prev_hash": previous,
                }
                row["hash"] = previous = record_hash(row)
                rows.append(row)
            await insert.fetch(*([row[c] for row in rows] for c in columns))
            await connection.execute(
                "UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE id = 1", seq, previous
            )

    results["ref: audit, per record, batches of 32, asyncpg + one INSERT ... unnest"] = per_record(
        await acpu_us(raw_batch_of_32, backends, 100), 32
    )
    await connection.close()
    return results


async def database(name: str) -> dict[str, Figures]:
    url = run.sqlalchemy_url(name)
    backends = Backends(name)
    results: dict[str, Figures] = {}
    for label, db_url in (
        ("PostgreSQL, TLS", url),
        ("PostgreSQL, ssl=disable", url + "?ssl=disable"),
    ):
        db = Database(create_engine(db_url))
        results |= await lkps_steps(db, backends, label)
        await db.dispose()
    results |= await references(name, backends)
    with tempfile.TemporaryDirectory() as folder:
        sqlite_url = f"sqlite+aiosqlite:///{folder}/lkps.db"
        await asyncio.to_thread(upgrade, sqlite_url)
        db = Database(create_engine(sqlite_url))
        results |= await lkps_steps(db, Backends(None), "SQLite")
        await db.dispose()
    return results


async def connections(name: str) -> dict[str, tuple[float, float, float]]:
    """(client CPU µs, backend CPU µs, wall µs) per connection opened, used once, closed."""
    dsn = f"postgresql://{run.PG_USER}:{run.PG_PASSWORD}@{run.PG_HOST}:{run.PG_PORT}/{name}"
    figures: dict[str, tuple[float, float, float]] = {}
    for label, ssl in (("TLS (asyncpg's default, sslmode=prefer)", "prefer"), ("no TLS", False)):
        client = backend = 0.0
        count = 100
        started = time.perf_counter()
        for _ in range(count):
            before = time.process_time()
            connection = await asyncpg.connect(dsn, ssl=ssl)
            await connection.fetchval("SELECT 1")
            pid = connection.get_server_pid()
            backend += procs.oncpu_seconds(pid)
            await connection.close()
            client += time.process_time() - before
        wall = time.perf_counter() - started
        figures[f"connect + SELECT 1 + close, {label}"] = (
            client / count * 1e6,
            backend / count * 1e6,
            wall / count * 1e6,
        )
    return figures


@contextmanager
def machine_load() -> Iterator[dict[str, float]]:
    """Cores used by everything but this process over the block (the PostgreSQL
    backends it drives included), and the load average at its end."""
    figures: dict[str, float] = {}
    busy, _ = procs.system_busy_seconds()
    cpu, wall = time.process_time(), time.perf_counter()
    yield figures
    elapsed = time.perf_counter() - wall
    others = procs.system_busy_seconds()[0] - busy - (time.process_time() - cpu)
    figures["cores busy outside this process"] = round(others / elapsed, 2)
    figures["load average (1 min)"] = os.getloadavg()[0]


def measure(*, churn: bool) -> dict[str, Any]:
    steps = {name: (value, 0.0, 0.0) for name, value in pure_python().items()}
    steps |= {name: (value, 0.0, 0.0) for name, value in in_process().items()}
    run.ensure_postgres()
    with machine_load() as load, run.bench_database() as name:
        steps |= asyncio.run(database(name))
        connection_figures = asyncio.run(connections(name)) if churn else {}
    return {"steps": steps, "connections": connection_figures, "load": load}


def print_figures(figures: dict[str, Any]) -> None:
    print("CPU µs per operation: this process / PostgreSQL backends / wall µs")
    for name, (cpu, backend, wall) in figures["steps"].items():
        if wall:
            print(f"  {cpu:8.1f} / {backend:7.1f} / {wall:8.1f}  {name}")
        else:
            print(f"  {cpu:8.1f}                     {name}")
    if figures["connections"]:
        print("new PostgreSQL connections, client CPU µs / backend CPU µs / wall µs each:")
        for name, (client, backend, wall) in figures["connections"].items():
            print(f"  {client:8.1f} / {backend:8.1f} / {wall:8.1f}  {name}")
    print("machine while measuring:", figures["load"])


def ab(before_src: Path, rounds: int) -> None:
    """Interleaved runs of this script with the `lkps` in `before_src`, then the installed
    one (alternating which goes first); each step's median and range."""
    if not (before_src / "lkps" / "__init__.py").is_file():
        raise SystemExit(f"{before_src} holds no lkps package")
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for index in range(rounds):
        order = ("before", "after") if index % 2 == 0 else ("after", "before")
        for variant in order:
            env = dict(os.environ)
            if variant == "before":
                env["PYTHONPATH"] = os.pathsep.join(
                    filter(None, (str(before_src), env.get("PYTHONPATH")))
                )
            output = subprocess.run(  # noqa: S603 (this script, this interpreter)
                [sys.executable, __file__, "--json", "--no-connections"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
                timeout=1800,
            ).stdout
            figures = json.loads(output.strip().splitlines()[-1])
            runs[variant].append(figures)
            print(f"round {index + 1} {variant}: machine {figures['load']}", flush=True)

    def summary(variant: str, step: str, column: int) -> tuple[float, float, float]:
        values = [run["steps"][step][column] for run in runs[variant] if step in run["steps"]]
        return statistics.median(values), min(values), max(values)

    print(f"\nmedian (min-max) of {rounds} interleaved runs each")
    print("CPU µs per operation, this process: before -> after; PostgreSQL backends' CPU µs")
    for step in runs["after"][0]["steps"]:
        cpu_b, cpu_a = summary("before", step, 0), summary("after", step, 0)
        pg_b, pg_a = summary("before", step, 1), summary("after", step, 1)
        change = (cpu_a[0] / cpu_b[0] - 1) * 100 if cpu_b[0] else 0.0
        print(
            f"  {cpu_b[0]:7.1f} ({cpu_b[1]:.0f}-{cpu_b[2]:.0f}) -> {cpu_a[0]:7.1f} "
            f"({cpu_a[1]:.0f}-{cpu_a[2]:.0f}) {change:+5.0f}%  | pg {pg_b[0]:6.1f} -> "
            f"{pg_a[0]:6.1f}  {step}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON line, for --ab")
    parser.add_argument("--no-connections", action="store_true", help="skip connection churn")
    parser.add_argument("--ab", type=Path, metavar="DIR", help="compare with the lkps in DIR")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each version, for --ab")
    args = parser.parse_args()
    if args.ab:
        ab(args.ab, args.rounds)
        return
    figures = measure(churn=not args.no_connections)
    if args.json:
        print(json.dumps(figures))
    else:
        print_figures(figures)


if __name__ == "__main__":
    main()
