"""Bulk-load a "large store" into an LKPS PostgreSQL database: audit records and agents.

Audit records continue the existing chain: under the chain head's row lock they get the
next sequence numbers, each `prev_hash` is the previous record's hash and each `hash`
is computed with `lkps.audit.chain.record_hash` from the row exactly as the audit
writer builds it, and the head is moved to the last one, so `lkps audit verify` still
passes. Rows are generated in Python and streamed with binary COPY
(asyncpg `copy_records_to_table`) in chunks, so the indexes are maintained as they
would be by a year of traffic, not rebuilt.

Agents: one `agents` row each, one live registration (expiring in two hours, so that
the presence sweeper stays quiet during the measurement) and two ended ones.

    python bench/large_store.py postgresql://lkps:lkps@127.0.0.1:5432/db --audit-rows 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from lkps.audit.chain import HASHED_FIELDS, canonical_json, record_hash

# The table's columns in the order the chain hashes them, then the hash itself.
AUDIT_COLUMNS = (*HASHED_FIELDS, "hash")
AGENT_COLUMNS = (
    "agent_id",
    "enforce_client_authz",
    "version",
    "metadata_json",
    "first_registered_at",
    "last_registered_at",
)
REGISTRATION_COLUMNS = (
    "registration_id",
    "agent_id",
    "version",
    "registered_at",
    "renewed_at",
    "last_seen_at",
    "expires_at",
    "ended_at",
    "end_reason",
)


@dataclass(frozen=True)
class LoadReport:
    audit_rows: int
    agents: int
    registrations: int
    head_seq: int
    seconds: float
    audit_seconds: float
    table_mb: float
    indexes_mb: float

    def as_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _users(tenant: str, count: int) -> list[tuple[str, str]]:
    """(object id, cwid) pairs."""
    return [
        (str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{i}")), f"user{i:06d}") for i in range(count)
    ]


def audit_rows(
    start_seq: int,
    previous_hash: str,
    count: int,
    *,
    agent_ids: Sequence[str],
    client_ids: Sequence[str],
    tenant: str,
    span: timedelta,
    end: datetime,
    rng: random.Random,
) -> Iterator[tuple[Any, ...]]:
    """`count` chained rows after (`start_seq`, `previous_hash`), spread evenly over
    `span` before `end`: mostly granted session starts, some denials and agent events."""
    users = _users(tenant, 50_000)
    step = span / max(count, 1)
    first_time = end - span
    ttl = timedelta(seconds=900)
    seq = start_seq
    for i in range(count):
        seq += 1
        occurred_at = first_time + step * i
        agent = agent_ids[rng.randrange(len(agent_ids))]
        client = client_ids[rng.randrange(len(client_ids))]
        oid, cwid = users[rng.randrange(len(users))]
        roll = rng.random()
        row: dict[str, Any] = {
            "seq": seq,
            "record_id": str(uuid.uuid4()),
            "occurred_at": occurred_at,
            "request_id": secrets.token_hex(16),
            "actor_tenant_id": tenant,
            "actor_object_id": oid,
            "actor_cwid": cwid,
            "client_app_id": client,
            "agent_id": agent,
            "room_name": None,
            "registration_id": None,
            "client_ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "details": None,
        }
        if roll < 0.90:
            room = f"{cwid}-{agent}-{int(occurred_at.timestamp())}-{secrets.token_hex(8)}"
            row |= {
                "event": "session.start",
                "outcome": "granted",
                "status": 200,
                "reason": "client pre-authorized for the agent",
                "room_name": room,
                "details": canonical_json(
                    {
                        "via": "start",
                        "session_id": str(uuid.uuid4()),
                        "token_expires_at": (occurred_at + ttl).isoformat(),
                        "metadata_bytes": rng.randrange(2, 400),
                    }
                ),
            }
        elif roll < 0.96:
            status, reason = rng.choice(
                [
                    (404, "agent has no live registration"),
                    (403, "client not pre-authorized for the agent"),
                    (401, "token has expired"),
                    (400, "bad request body"),
                ]
            )
            row |= {"event": "session.start", "outcome": "denied", "status": status}
            row["reason"] = reason
        else:
            row |= {
                "event": rng.choice(["agent.register", "agent.renew", "agent.deregister"]),
                "outcome": "granted",
                "status": 200,
                "reason": None,
                "actor_cwid": agent,
                "actor_object_id": str(uuid.uuid5(uuid.NAMESPACE_URL, agent)),
                "client_app_id": agent,
                "registration_id": str(uuid.uuid4()),
            }
        row["prev_hash"] = previous_hash
        row["hash"] = previous_hash = record_hash(row)
        yield tuple(row[name] for name in AUDIT_COLUMNS)


def agent_rows(
    agent_ids: Sequence[str], now: datetime, rng: random.Random
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    agents: list[tuple[Any, ...]] = []
    registrations: list[tuple[Any, ...]] = []
    for agent in agent_ids:
        first = now - timedelta(days=rng.uniform(1, 365))
        version = f"1.{rng.randrange(20)}.{rng.randrange(10)}"
        metadata = json.dumps({"team": f"team{rng.randrange(300)}"}, separators=(",", ":"))
        agents.append((agent, rng.random() < 0.8, version, metadata, first, now))
        for ended in (True, True, False):
            registered = now - timedelta(hours=rng.uniform(0.1, 48)) if ended else now
            registrations.append(
                (
                    str(uuid.uuid4()),
                    agent,
                    version,
                    registered,
                    registered,
                    registered,
                    registered + timedelta(seconds=90) if ended else now + timedelta(hours=2),
                    registered + timedelta(seconds=30) if ended else None,
                    "deregistered" if ended else None,
                )
            )
    return agents, registrations


async def load(
    dsn: str,
    *,
    audit_count: int = 1_000_000,
    agent_count: int = 10_000,
    extra_agent_ids: Sequence[str] = (),
    client_count: int = 200,
    chunk: int = 50_000,
    seed: int = 7,
    progress: bool = True,
) -> LoadReport:
    """Add `agent_count` agents (their ids random) and `audit_count` chained records.

    `extra_agent_ids` (e.g. the agent the benchmark drives) are used in audit records
    but not inserted as agents."""
    rng = random.Random(seed)
    began = time.monotonic()
    now = datetime.now(UTC)
    agent_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(agent_count)]
    client_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(client_count)]
    connection = await asyncpg.connect(dsn)
    try:
        agents, registrations = agent_rows(agent_ids, now, rng)
        async with connection.transaction():
            await connection.copy_records_to_table(
                "agents", records=agents, columns=list(AGENT_COLUMNS)
            )
            await connection.copy_records_to_table(
                "agent_registrations", records=registrations, columns=list(REGISTRATION_COLUMNS)
            )
        audit_began = time.monotonic()
        async with connection.transaction():
            head = await connection.fetchrow(
                "SELECT seq, hash FROM audit_chain_head WHERE id = 1 FOR UPDATE"
            )
            assert head is not None
            seq, previous = int(head["seq"]), str(head["hash"])
            tenant = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            rows = audit_rows(
                seq,
                previous,
                audit_count,
                agent_ids=[*agent_ids, *extra_agent_ids],
                client_ids=client_ids,
                tenant=tenant,
                span=timedelta(days=90),
                end=now - timedelta(minutes=5),
                rng=rng,
            )
            written = 0
            last: tuple[Any, ...] | None = None
            while written < audit_count:
                batch = [next(rows) for _ in range(min(chunk, audit_count - written))]
                await connection.copy_records_to_table(
                    "audit_records", records=batch, columns=list(AUDIT_COLUMNS)
                )
                written += len(batch)
                last = batch[-1]
                if progress:
                    print(
                        f"  audit rows: {written:>9,} / {audit_count:,} "
                        f"({time.monotonic() - audit_began:5.1f} s)",
                        flush=True,
                    )
            if last is not None:
                await connection.execute(
                    "UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE id = 1",
                    last[0],
                    last[-1],
                )
                seq = int(last[0])
        audit_seconds = time.monotonic() - audit_began
        # What autovacuum would have done long before a real store got this big.
        await connection.execute("VACUUM (ANALYZE) audit_records")
        await connection.execute("VACUUM (ANALYZE) agents")
        await connection.execute("VACUUM (ANALYZE) agent_registrations")
        await connection.execute("CHECKPOINT")
        sizes = await connection.fetchrow(
            "SELECT pg_table_size('audit_records') AS t, pg_indexes_size('audit_records') AS i"
        )
        assert sizes is not None
    finally:
        await connection.close()
    return LoadReport(
        audit_rows=audit_count,
        agents=agent_count,
        registrations=len(registrations),
        head_seq=seq,
        seconds=round(time.monotonic() - began, 1),
        audit_seconds=round(audit_seconds, 1),
        table_mb=round(sizes["t"] / 2**20, 1),
        indexes_mb=round(sizes["i"] / 2**20, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dsn", help="postgresql://user:password@host:port/database")
    parser.add_argument("--audit-rows", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=10_000)
    args = parser.parse_args()
    report = asyncio.run(load(args.dsn, audit_count=args.audit_rows, agent_count=args.agents))
    print(json.dumps(report.as_json()))


if __name__ == "__main__":
    main()
