"""Each running worker process of an agent holds its own registration; the agent is
present while any of them registered or sent a heartbeat within the presence TTL, and
said (or never said otherwise) that its worker is connected to LiveKit."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from lkps.agents.presence import (
    AgentCounts,
    AgentFacts,
    AgentPresence,
    AgentSummary,
    ConnectedWorker,
    Registration,
    livekit_float,
)
from lkps.clock import Clock
from lkps.errors import NotFound, ServiceUnavailable
from lkps.metrics import PRESENCE_READ_CALLERS
from lkps.singleflight import SingleFlight
from lkps.store import Database, connections
from lkps.store import registrations as queries


def agent_not_connected(agent_id: str) -> NotFound:
    return NotFound(
        f"Agent with app ID '{agent_id}' is not connected",
        reason="agent has no live registration",
    )


class AgentAtCapacity(ServiceUnavailable):
    """Every connected worker of the agent is full or at/above the target load: LiveKit
    would offer the job to none of them, and the user would wait for an agent that
    never comes. The client may retry shortly (workers report every 2.5 s)."""


def agent_at_capacity(agent_id: str) -> AgentAtCapacity:
    # The audit reason is the message itself: the denial says what the client was told.
    return AgentAtCapacity(f"Agent with app ID '{agent_id}' is at capacity")


class AgentRegistry:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        presence_ttl: int,
        default_enforce: bool,
        gateway: bool = False,
        target_load: float = 0.7,
    ) -> None:
        self._db = db
        # Gateway mode: presence is a live worker connection (lkps.gateway.live), not a
        # register or heartbeat within the TTL.
        self._gateway = gateway
        self._target_load = livekit_float(target_load)
        self._clock = clock
        self._ttl = timedelta(seconds=presence_ttl)
        self._default_enforce = default_enforce
        # Not joining a read under way: a deregistration committed before a session start
        # asked must count for it (see lkps.singleflight).
        self._presence_reads = SingleFlight(
            self._read_presence, join_running=False, observe=PRESENCE_READ_CALLERS.observe
        )

    async def register(
        self,
        agent_id: str,
        *,
        registration_id: str | None = None,
        enforce_client_authz: bool | None = None,
        version: str | None = None,
        metadata: dict[str, Any] | None = None,
        worker_connected: bool | None = None,
        session: AsyncSession | None = None,
    ) -> Registration:
        """Register a worker, or renew its live registration when it names one; in
        `session` when given (the caller commits it, with its audit record).

        `worker_connected=False` registers without becoming present (the worker still has
        to connect to LiveKit with the token this returns); None leaves a renewed
        registration as it was and makes a new one present at once."""
        now = self._clock.now()
        expires_at = now + self._ttl
        enforce = self._default_enforce if enforce_client_authz is None else enforce_client_authz
        async with self._db.session(within=session) as session:
            await queries.upsert_agent(
                session,
                agent_id=agent_id,
                enforce_client_authz=enforce,
                version=version,
                metadata_json=json.dumps(metadata, separators=(",", ":")) if metadata else None,
                now=now,
            )
            renewed = registration_id is not None and await queries.renew_registration(
                session,
                registration_id=registration_id,
                agent_id=agent_id,
                version=version,
                now=now,
                expires_at=expires_at,
                worker_connected=worker_connected,
            )
            if not renewed:
                registration_id = str(uuid.uuid4())
                await queries.insert_registration(
                    session,
                    registration_id=registration_id,
                    agent_id=agent_id,
                    version=version,
                    now=now,
                    expires_at=expires_at,
                    worker_connected=worker_connected is not False,
                )
        assert registration_id is not None
        return Registration(registration_id, agent_id, renewed, enforce, expires_at)

    async def heartbeat(
        self, agent_id: str, registration_id: str | None, *, worker_connected: bool | None = None
    ) -> datetime:
        now = self._clock.now()
        expires_at = now + self._ttl
        async with self._db.session() as session:
            touched = await queries.touch_registrations(
                session,
                agent_id=agent_id,
                registration_id=registration_id,
                now=now,
                expires_at=expires_at,
                worker_connected=worker_connected,
            )
        if not touched:
            which = f"Registration '{registration_id}'" if registration_id else "The agent"
            raise NotFound(
                f"{which} is not registered or its presence expired; register again",
                reason="heartbeat for no live registration",
            )
        return expires_at

    async def deregister(
        self,
        agent_id: str,
        registration_id: str | None,
        *,
        reason: str = "deregistered",
        session: AsyncSession | None = None,
    ) -> list[str]:
        """End the registrations named (one, or all of the agent's) and forget their
        live worker connections; in `session` when given, as `register`."""
        async with self._db.session(within=session) as session:
            ended = await queries.end_registrations(
                session,
                agent_id=agent_id,
                registration_id=registration_id,
                now=self._clock.now(),
                reason=reason,
            )
            await connections.end_connections_of(session, ended)
        return ended

    async def presence(self, agent_id: str) -> AgentPresence | None:
        """Never cached: answered by a store read that started after the call, so a
        deregistration or an override committed by any replica counts from the next
        session start on. Concurrent calls for one agent share that read."""
        facts = await self._presence_reads.get(agent_id)
        if facts is None:
            return None
        return AgentPresence(
            agent_id,
            facts.enforce_client_authz,
            facts.version,
            facts.override_enforce,
            frozenset(facts.additional_clients),
            facts.has_capacity,
        )

    async def _read_presence(self, agent_id: str) -> AgentFacts | None:
        if self._gateway:
            return await connections.present_agent(
                self._db, agent_id, self._clock.now(), self._target_load
            )
        return await queries.present_agent(self._db, agent_id, self._clock.now())

    async def workers(self) -> list[ConnectedWorker]:
        """Every worker connected through the gateway on a replica whose lease is alive."""
        return await connections.live_workers(self._db, self._clock.now())

    async def counts(self) -> AgentCounts:
        """`present` by the mode's own rule: a registered worker connection on a live
        replica (gateway), or a live registration whose worker is connected (direct)."""
        now = self._clock.now()
        async with self._db.session() as session:
            counts = await queries.agent_counts(session, now)
            if self._gateway:
                counts = replace(counts, present=await connections.present_agents(session, now))
        return counts

    async def summaries(self) -> list[AgentSummary]:
        async with self._db.session() as session:
            return await queries.agent_summaries(session, self._clock.now())

    async def claim_expired(
        self, limit: int = 500, *, session: AsyncSession | None = None
    ) -> list[tuple[str, str]]:
        """End the registrations whose presence lapsed, and forget their live worker
        connections (as `deregister`); in `session` when given, as `register`.
        (registration, agent) pairs."""
        async with self._db.session(within=session) as session:
            expired = await queries.claim_expired(session, now=self._clock.now(), limit=limit)
            await connections.end_connections_of(session, [rid for rid, _ in expired])
        return expired
