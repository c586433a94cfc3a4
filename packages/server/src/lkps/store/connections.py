"""Live worker connections through the agent gateway, and the replicas holding them.

A connection counts while its replica's lease is alive (`lease_expires_at` in the
future): every replica renews its own lease every few seconds, deletes a connection's
row as the socket closes, and its rows altogether when it shuts down. A replica that
dies without a word stops counting when its lease lapses; another replica deletes its
rows later (`collect_dead_replicas`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from lkps.agents.presence import AgentFacts, ConnectedWorker
from lkps.store.engine import Database
from lkps.store.models import (
    AgentRow,
    AuthorizationOverrideRow,
    GatewayReplicaRow,
    RegistrationRow,
    WorkerConnectionRow,
)
from lkps.store.overrides import decode_clients
from lkps.store.upsert import upsert_values

Connection = WorkerConnectionRow


def _counted(now: datetime | ColumnElement[datetime]) -> list[ColumnElement[bool]]:
    """The connection's replica holds a live lease."""
    return [
        GatewayReplicaRow.replica_id == Connection.replica_id,
        GatewayReplicaRow.lease_expires_at > now,
    ]


def _dispatchable(now: ColumnElement[datetime]) -> list[ColumnElement[bool]]:
    """Counted, and LiveKit answered its register: jobs can be offered to it."""
    return [
        Connection.agent_id == AgentRow.agent_id,
        Connection.registered.is_(True),
        *_counted(now),
    ]


# Session start in gateway mode: the agent (with any override) when one of its workers
# is connected and registered, and whether any such worker is below the target load and
# not full. Built once with bound parameters (`agent_id`, `now`, `target_load`), like
# `registrations.PRESENT_AGENT`: one statement, one round trip, on the hot path.
PRESENT_AGENT = (
    select(
        AgentRow.enforce_client_authz,
        AgentRow.version,
        AuthorizationOverrideRow.enforce_client_authz,
        AuthorizationOverrideRow.additional_clients,
        exists()
        .where(
            *_dispatchable(bindparam("now")),
            Connection.available.is_(True),
            Connection.load < bindparam("target_load"),
        )
        .label("has_capacity"),
    )
    .outerjoin(AuthorizationOverrideRow, AuthorizationOverrideRow.agent_id == AgentRow.agent_id)
    .where(
        AgentRow.agent_id == bindparam("agent_id"),
        exists().where(*_dispatchable(bindparam("now"))),
    )
)


async def present_agent(
    db: Database, agent_id: str, now: datetime, target_load: float
) -> AgentFacts | None:
    row = await db.first_row(
        PRESENT_AGENT, {"agent_id": agent_id, "now": now, "target_load": target_load}
    )
    if row is None:
        return None
    return AgentFacts(bool(row[0]), row[1], row[2], decode_clients(row[3]), bool(row[4]))


def connection_values(worker: ConnectedWorker) -> dict[str, Any]:
    return {
        "connection_id": worker.connection_id,
        "agent_id": worker.agent_id,
        "registration_id": worker.registration_id,
        "replica_id": worker.replica_id,
        "worker_id": worker.worker_id,
        "connected_at": worker.connected_at,
        "registered": worker.registered,
        "available": worker.available,
        "load": worker.load,
        "job_count": worker.job_count,
        "updated_at": worker.updated_at,
    }


async def put_connections(db: Database, workers: Sequence[ConnectedWorker]) -> None:
    """Insert these connections, or overwrite their rows with what they say now."""
    if not workers:
        return
    rows = [connection_values(worker) for worker in workers]
    keep = {"connection_id", "connected_at"}
    changes = [name for name in rows[0] if name not in keep]

    async def work(connection: AsyncConnection) -> None:
        statement = upsert_values(connection.dialect.name, Connection, rows)
        await connection.execute(
            statement.on_conflict_do_update(
                index_elements=["connection_id"],
                set_={name: statement.excluded[name] for name in changes},
            )
        )

    await db.statement(work)


async def update_connection(db: Database, connection_id: str, **values: Any) -> bool:
    """Change a connection's row; False when there is none (closed, or never written)."""

    async def work(connection: AsyncConnection) -> bool:
        result = await connection.execute(
            update(Connection)
            .where(Connection.connection_id == connection_id)
            .values(**values)
            .returning(Connection.connection_id)
        )
        return result.first() is not None

    return await db.statement(work)


async def delete_connections(db: Database, connection_ids: Iterable[str]) -> None:
    ids = list(connection_ids)
    if not ids:
        return

    async def work(connection: AsyncConnection) -> None:
        await connection.execute(delete(Connection).where(Connection.connection_id.in_(ids)))

    await db.statement(work)


async def renew_lease(db: Database, replica_id: str, now: datetime, expires_at: datetime) -> bool:
    """Extend the replica's lease; False when its row was gone (and is now inserted
    anew): another replica collected it as dead, and its connections with it."""

    async def work(connection: AsyncConnection) -> bool:
        renewed = await connection.execute(
            update(GatewayReplicaRow)
            .where(GatewayReplicaRow.replica_id == replica_id)
            .values(lease_expires_at=expires_at)
            .returning(GatewayReplicaRow.replica_id)
        )
        if renewed.first() is not None:
            return True
        values = {"replica_id": replica_id, "started_at": now, "lease_expires_at": expires_at}
        statement = upsert_values(connection.dialect.name, GatewayReplicaRow, [values])
        await connection.execute(
            statement.on_conflict_do_update(
                index_elements=["replica_id"], set_={"lease_expires_at": expires_at}
            )
        )
        return False

    return await db.transaction(work)


async def release_replica(db: Database, replica_id: str) -> None:
    """A replica going away: its connections stop counting now, not when its lease lapses."""

    async def work(connection: AsyncConnection) -> None:
        await connection.execute(delete(Connection).where(Connection.replica_id == replica_id))
        await connection.execute(
            delete(GatewayReplicaRow).where(GatewayReplicaRow.replica_id == replica_id)
        )

    await db.transaction(work)


async def collect_dead_replicas(db: Database, lapsed_before: datetime) -> None:
    """Delete replicas whose lease lapsed before `lapsed_before`, and every connection
    of a replica that has no row (they count for nothing either way: housekeeping)."""

    async def work(connection: AsyncConnection) -> None:
        await connection.execute(
            delete(GatewayReplicaRow).where(GatewayReplicaRow.lease_expires_at < lapsed_before)
        )
        await connection.execute(
            delete(Connection).where(
                ~exists().where(GatewayReplicaRow.replica_id == Connection.replica_id)
            )
        )

    await db.transaction(work)


async def registration_open(db: Database, agent_id: str, registration_id: str) -> bool:
    """The registration exists, is the agent's, and was not ended (deregistered,
    expired): a gateway credential is only good while it is."""
    row = await db.first_row(
        OPEN_REGISTRATION, {"registration_id": registration_id, "agent_id": agent_id}
    )
    return row is not None


async def ended_registrations(db: Database, registration_ids: Collection[str]) -> set[str]:
    """Those of these registrations that ended: deregistered, or expired (one read, every
    lease renewal)."""

    async def work(connection: AsyncConnection) -> set[str]:
        result = await connection.execute(
            select(RegistrationRow.registration_id).where(
                RegistrationRow.registration_id.in_(list(registration_ids)),
                RegistrationRow.ended_at.is_not(None),
            )
        )
        return set(result.scalars())

    return await db.read(work)


OPEN_REGISTRATION = select(RegistrationRow.registration_id).where(
    RegistrationRow.registration_id == bindparam("registration_id"),
    RegistrationRow.agent_id == bindparam("agent_id"),
    RegistrationRow.ended_at.is_(None),
)


async def end_connections_of(session: AsyncSession, registration_ids: Sequence[str]) -> None:
    """A deregistered (or expired) worker stops counting at once, on every replica; the
    replica holding its socket closes it (lkps.gateway.live.end_registrations)."""
    if registration_ids:
        await session.execute(
            delete(Connection).where(Connection.registration_id.in_(list(registration_ids)))
        )


async def present_agents(session: AsyncSession, now: datetime) -> int:
    """How many agents are present by the gateway's rule: one of their connections is
    registered with LiveKit on a replica whose lease is alive (`lkps_agents_present`)."""
    count = await session.execute(
        select(func.count(func.distinct(Connection.agent_id)))
        .join(GatewayReplicaRow, GatewayReplicaRow.replica_id == Connection.replica_id)
        .where(Connection.registered.is_(True), GatewayReplicaRow.lease_expires_at > now)
    )
    return int(count.scalar_one())


async def live_workers(db: Database, now: datetime) -> list[ConnectedWorker]:
    """Every counted connection (lease alive), by agent and age."""

    async def work(connection: AsyncConnection) -> list[ConnectedWorker]:
        result = await connection.execute(
            select(*Connection.__table__.columns)
            .join(GatewayReplicaRow, GatewayReplicaRow.replica_id == Connection.replica_id)
            .where(GatewayReplicaRow.lease_expires_at > now)
            .order_by(Connection.agent_id, Connection.connected_at, Connection.connection_id)
        )
        return [ConnectedWorker(**row._asdict()) for row in result]

    return await db.read(work)
