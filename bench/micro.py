"""CPU cost of each step of a session start, one at a time, in one process.

    python3 -m uv run python bench/micro.py

CPU time (time.process_time) per operation, so the figures hold on a shared machine
where wall-clock throughput does not; database steps also report wall time per
operation, done one after another on an idle connection (round trips included).
Uses its own throwaway PostgreSQL database, like bench/run.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jwt
import large_store
import procs
import run
from sqlalchemy.ext.asyncio import create_async_engine

from lkps.agents import AgentRegistry
from lkps.api.schemas import SessionStartRequest, SessionStartResponse
from lkps.audit import AuditEntry, AuditEvent, AuditLog, Outcome
from lkps.audit.chain import canonical_json, record_hash
from lkps.clock import SystemClock
from lkps.livekit import TokenMinter, dispatch_room_config
from lkps.sessions.metadata import dispatch_metadata
from lkps.sessions.room_names import new_room_name
from lkps.store import Database
from lkps.store.engine import create_engine
from lkps_testkit import EntraDouble

_TYPES = (
    "bigint", "text", "timestamptz", "text", "text", "integer", "text", "text", "text",
    "text", "text", "text", "text", "text", "text", "text", "text", "text", "text",
)  # fmt: skip


def cpu_us(operation: Callable[[], Any], repeat: int = 5000) -> float:
    operation()
    started = time.process_time()
    for _ in range(repeat):
        operation()
    return (time.process_time() - started) / repeat * 1e6


async def acpu_us(
    operation: Callable[[], Awaitable[Any]], repeat: int = 2000
) -> tuple[float, float]:
    """(CPU µs, wall µs) per awaited operation, sequentially."""
    await operation()
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        await operation()
    return (
        (time.process_time() - started_cpu) / repeat * 1e6,
        (time.perf_counter() - started_wall) / repeat * 1e6,
    )


def pure_python() -> dict[str, float]:
    clock = SystemClock()
    minter = TokenMinter("APIbench", "s" * 48, clock)
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
                agent, dispatch_metadata(metadata), max_participants=2
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


async def database(name: str, agent_id: str) -> dict[str, tuple[float, float]]:
    url = run.sqlalchemy_url(name)
    clock = SystemClock()
    results: dict[str, tuple[float, float]] = {}
    default = Database(create_engine(url))
    registry = AgentRegistry(default, clock, presence_ttl=3600, default_enforce=True)
    await registry.register(agent_id, enforce_client_authz=True)
    results["presence: LKPS as configured (ORM, pre-ping, TLS)"] = await acpu_us(
        lambda: registry.presence(agent_id)
    )
    plain = Database(
        create_async_engine(url + "?ssl=disable", pool_size=5, max_overflow=0, pool_pre_ping=False)
    )
    plain_registry = AgentRegistry(plain, clock, presence_ttl=3600, default_enforce=True)
    results["presence: no pre-ping, no TLS (ORM)"] = await acpu_us(
        lambda: plain_registry.presence(agent_id)
    )

    async def empty_session() -> None:
        async with plain.session():
            pass

    results["  of which: ORM session + transaction, no statement"] = await acpu_us(empty_session)
    from sqlalchemy import and_, bindparam, exists, select

    from lkps.store.models import AgentRow, AuthorizationOverrideRow, RegistrationRow

    prebuilt = (
        select(
            AgentRow.enforce_client_authz,
            AgentRow.version,
            AuthorizationOverrideRow.enforce_client_authz,
            AuthorizationOverrideRow.additional_clients,
        )
        .outerjoin(AuthorizationOverrideRow, AuthorizationOverrideRow.agent_id == AgentRow.agent_id)
        .where(
            and_(
                AgentRow.agent_id == bindparam("agent"),
                exists().where(
                    RegistrationRow.agent_id == AgentRow.agent_id,
                    RegistrationRow.ended_at.is_(None),
                    RegistrationRow.expires_at > bindparam("now"),
                ),
            )
        )
    )

    async def core_prebuilt() -> None:
        async with plain.engine.connect() as connection:
            result = await connection.execute(
                prebuilt, {"agent": agent_id, "now": datetime.now(UTC)}
            )
            result.first()

    results["presence: SQLAlchemy Core, statement built once, no ORM session"] = await acpu_us(
        core_prebuilt
    )
    connection = await asyncpg.connect(
        f"postgresql://{run.PG_USER}:{run.PG_PASSWORD}@{run.PG_HOST}:{run.PG_PORT}/{name}",
        ssl=False,
    )
    statement = await connection.prepare(
        "SELECT a.enforce_client_authz, a.version, o.enforce_client_authz, o.additional_clients "
        "FROM agents a LEFT JOIN agent_authz_overrides o ON o.agent_id = a.agent_id "
        "WHERE a.agent_id = $1 AND EXISTS (SELECT 1 FROM agent_registrations r "
        "WHERE r.agent_id = a.agent_id AND r.ended_at IS NULL AND r.expires_at > $2)"
    )
    results["presence: one prepared asyncpg statement, autocommit"] = await acpu_us(
        lambda: statement.fetchrow(agent_id, datetime.now(UTC))
    )
    await connection.close()
    audit = AuditLog(default)
    await audit.start()

    def entry() -> AuditEntry:
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

    results["audit append, batches of 1 (sequential)"] = await acpu_us(
        lambda: audit.append(entry()), 1000
    )

    async def batch_of_32() -> None:
        await asyncio.gather(*(audit.append(entry()) for _ in range(32)))

    cpu, wall = await acpu_us(batch_of_32, 100)
    results["audit append, per record in batches of 32"] = (cpu / 32, wall / 32)
    raw = await asyncpg.connect(
        f"postgresql://{run.PG_USER}:{run.PG_PASSWORD}@{run.PG_HOST}:{run.PG_PORT}/{name}",
        ssl=False,
    )
    columns = list(large_store.AUDIT_COLUMNS)
    arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_TYPES))
    insert = await raw.prepare(
        f"INSERT INTO audit_records ({', '.join(columns)}) SELECT * FROM unnest({arrays})"  # noqa: S608 (constant names)
    )

    async def raw_batch_of_32() -> None:
        async with raw.transaction():
            head = await raw.fetchrow(
                "UPDATE audit_chain_head SET seq = seq WHERE id = 1 RETURNING seq, hash"
            )
            assert head is not None
            seq, previous = int(head["seq"]), str(head["hash"])
            rows = []
            for _ in range(32):
                seq += 1
                item = entry()
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
            await raw.execute(
                "UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE id = 1", seq, previous
            )

    cpu, wall = await acpu_us(raw_batch_of_32, 100)
    results["audit: per record, batches of 32, asyncpg + one INSERT ... unnest"] = (
        cpu / 32,
        wall / 32,
    )
    await raw.close()
    await audit.stop()
    await default.dispose()
    await plain.dispose()
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


def main() -> None:
    print("pure Python steps, CPU µs per operation:")
    for name, value in pure_python().items():
        print(f"  {value:8.1f}  {name}")
    run.ensure_postgres()
    with run.bench_database() as name:
        figures = asyncio.run(database(name, str(uuid.uuid4())))
        churn = asyncio.run(connections(name))
    print("database steps, CPU µs / wall µs per operation (sequential, idle server):")
    for name, (cpu, wall) in figures.items():
        print(f"  {cpu:8.1f} / {wall:8.1f}  {name}")
    print("new PostgreSQL connections, client CPU µs / backend CPU µs / wall µs each:")
    for name, (client, backend, wall) in churn.items():
        print(f"  {client:8.1f} / {backend:8.1f} / {wall:8.1f}  {name}")


if __name__ == "__main__":
    main()
