"""What-if builds of LKPS, for the benchmark only: `lkps.asgi:app_from_environment`
with changes applied in memory, to measure what a server change would gain (or what a
part of the request costs) before anyone makes it. Nothing here changes LKPS's code.

    BENCH_WHATIF=pool,presence-cache uvicorn whatif:app_from_environment --factory --app-dir bench

Changes (comma-separated in BENCH_WHATIF):

- `pool`: a fixed pool without pre-ping (`pool_size` = BENCH_POOL_SIZE, default 20,
  `max_overflow=0`, `pool_pre_ping=False`). Before e75b28e LKPS had 10 + 20 overflow
  connections, which opened and closed connections under load; from then until the
  hot-path changes it had a fixed pool of 20, still with pre-ping (three round trips
  with asyncpg on every checkout). LKPS itself now has no pre-ping either; there this
  what-if only changes the pool size and leaves out LKPS's free checkout check.
- `presence-cache`: remember each agent's presence for BENCH_PRESENCE_CACHE_SECONDS
  (default 1.0) per process: one query per agent per second instead of one per request.
  (Semantics: a deregistration is seen up to that long later.)
- `skip-presence` (attribution only): presence answered without the database.
- `skip-audit` (attribution only): audit records not written at all.
- `no-ssl`: (applied by bench/run.py, a setting rather than a change) the database
  URL with `?ssl=disable`; asyncpg otherwise negotiates TLS with PostgreSQL.
- `none`: no change (the harness itself, to compare with `lkps serve`).
"""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import FastAPI

PATCHES = frozenset(p.strip() for p in os.environ.get("BENCH_WHATIF", "").split(",") if p.strip())
KNOWN = {"pool", "presence-cache", "skip-presence", "skip-audit", "no-ssl", "none"}


def _pool() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from lkps.store import engine

    original = engine.create_engine
    size = int(os.environ.get("BENCH_POOL_SIZE", "20"))

    def create_engine(url: str, *, timeout: float = 5.0, **_: Any) -> Any:
        if engine.is_sqlite(url):
            return original(url, timeout=timeout)
        return create_async_engine(
            url,
            pool_size=size,
            max_overflow=0,
            pool_timeout=timeout,
            pool_pre_ping=False,
            connect_args={"timeout": timeout, "command_timeout": timeout},
        )

    engine.create_engine = create_engine


def _presence_cache() -> None:
    from lkps.agents.registry import AgentRegistry

    ttl = float(os.environ.get("BENCH_PRESENCE_CACHE_SECONDS", "1.0"))
    original = AgentRegistry.presence
    cache: dict[str, tuple[float, Any]] = {}

    async def presence(self: AgentRegistry, agent_id: str) -> Any:
        now = time.monotonic()
        hit = cache.get(agent_id)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        value = await original(self, agent_id)
        cache[agent_id] = (now, value)
        return value

    AgentRegistry.presence = presence  # type: ignore[method-assign]


def _skip_presence() -> None:
    from lkps.agents.registry import AgentPresence, AgentRegistry

    async def presence(self: AgentRegistry, agent_id: str) -> AgentPresence:
        return AgentPresence(agent_id, True, "bench", None, frozenset())

    AgentRegistry.presence = presence  # type: ignore[method-assign]


def _skip_audit() -> None:
    from lkps.audit.log import AuditLog
    from lkps.audit.records import AuditEntry, AuditRecord

    async def append(self: AuditLog, entry: AuditEntry) -> AuditRecord:
        return AuditRecord(
            seq=0,
            record_id=entry.record_id,
            occurred_at=entry.occurred_at,
            event=str(entry.event),
            outcome=str(entry.outcome),
            status=entry.status,
            reason=entry.reason,
            request_id=entry.request_id,
            actor_tenant_id=entry.actor_tenant_id,
            actor_object_id=entry.actor_object_id,
            actor_cwid=entry.actor_cwid,
            client_app_id=entry.client_app_id,
            agent_id=entry.agent_id,
            room_name=entry.room_name,
            registration_id=entry.registration_id,
            client_ip=entry.client_ip,
            details=None,
            prev_hash="",
            hash="",
        )

    AuditLog.append = append  # type: ignore[method-assign]


def apply(patches: frozenset[str]) -> None:
    unknown = patches - KNOWN
    if unknown:
        raise ValueError(f"unknown BENCH_WHATIF changes: {sorted(unknown)}")
    for name, patch in (
        ("pool", _pool),
        ("presence-cache", _presence_cache),
        ("skip-presence", _skip_presence),
        ("skip-audit", _skip_audit),
    ):
        if name in patches:
            patch()


apply(PATCHES)


def app_from_environment() -> FastAPI:
    from lkps.asgi import app_from_environment as build

    return build()
