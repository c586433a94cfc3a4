"""Agent and registration queries. A registration is live while `ended_at` is null and
`expires_at` is in the future, and dispatchable while its worker is connected to LiveKit
too; presence is therefore a query, not a flag to keep in sync."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, bindparam, case, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from lkps.agents.presence import AgentCounts, AgentFacts, AgentSummary
from lkps.store.engine import Database
from lkps.store.models import AgentRow, AuthorizationOverrideRow, RegistrationRow
from lkps.store.overrides import decode_clients
from lkps.store.upsert import upsert


def _live(now: datetime | ColumnElement[datetime]) -> list[ColumnElement[bool]]:
    return [RegistrationRow.ended_at.is_(None), RegistrationRow.expires_at > now]


def _dispatchable(now: datetime | ColumnElement[datetime]) -> list[ColumnElement[bool]]:
    """Live, and its worker connected to LiveKit: a session reaches it."""
    return [*_live(now), RegistrationRow.worker_connected.is_(True)]


async def upsert_agent(
    session: AsyncSession,
    *,
    agent_id: str,
    enforce_client_authz: bool,
    version: str | None,
    metadata_json: str | None,
    now: datetime,
) -> None:
    values = {
        "agent_id": agent_id,
        "enforce_client_authz": enforce_client_authz,
        "version": version,
        "metadata_json": metadata_json,
        "first_registered_at": now,
        "last_registered_at": now,
    }
    changes = {
        "enforce_client_authz": enforce_client_authz,
        "version": version,
        "metadata_json": metadata_json,
        "last_registered_at": now,
    }
    await upsert(session, AgentRow, "agent_id", values, changes)


async def insert_registration(
    session: AsyncSession,
    *,
    registration_id: str,
    agent_id: str,
    version: str | None,
    now: datetime,
    expires_at: datetime,
    worker_connected: bool,
) -> None:
    session.add(
        RegistrationRow(
            registration_id=registration_id,
            agent_id=agent_id,
            version=version,
            registered_at=now,
            renewed_at=now,
            last_seen_at=now,
            expires_at=expires_at,
            worker_connected=worker_connected,
        )
    )
    await session.flush()


async def renew_registration(
    session: AsyncSession,
    *,
    registration_id: str,
    agent_id: str,
    version: str | None,
    now: datetime,
    expires_at: datetime,
    worker_connected: bool | None,
) -> bool:
    values = _worker_state(worker_connected) | {
        "version": version,
        "renewed_at": now,
        "last_seen_at": now,
        "expires_at": expires_at,
    }
    result = await session.execute(
        update(RegistrationRow)
        .where(
            RegistrationRow.registration_id == registration_id,
            RegistrationRow.agent_id == agent_id,
            *_live(now),
        )
        .values(**values)
        .returning(RegistrationRow.registration_id)
    )
    return result.first() is not None


async def touch_registrations(
    session: AsyncSession,
    *,
    agent_id: str,
    registration_id: str | None,
    now: datetime,
    expires_at: datetime,
    worker_connected: bool | None = None,
) -> int:
    """Extend the live registrations named (one, or all of the agent's); how many."""
    conditions: list[ColumnElement[bool]] = [RegistrationRow.agent_id == agent_id, *_live(now)]
    if registration_id is not None:
        conditions.append(RegistrationRow.registration_id == registration_id)
    values = _worker_state(worker_connected) | {"last_seen_at": now, "expires_at": expires_at}
    result = await session.execute(
        update(RegistrationRow)
        .where(*conditions)
        .values(**values)
        .returning(RegistrationRow.registration_id)
    )
    return len(result.all())


def _worker_state(worker_connected: bool | None) -> dict[str, bool]:
    """The column to set when the agent said how its worker is; nothing when it did not."""
    return {} if worker_connected is None else {"worker_connected": worker_connected}


async def end_registrations(
    session: AsyncSession,
    *,
    agent_id: str,
    registration_id: str | None,
    now: datetime,
    reason: str,
) -> list[str]:
    conditions: list[ColumnElement[bool]] = [
        RegistrationRow.agent_id == agent_id,
        RegistrationRow.ended_at.is_(None),
    ]
    if registration_id is not None:
        conditions.append(RegistrationRow.registration_id == registration_id)
    result = await session.execute(
        update(RegistrationRow)
        .where(*conditions)
        .values(ended_at=now, end_reason=reason)
        .returning(RegistrationRow.registration_id)
    )
    return [row.registration_id for row in result]


# Built once, with bound parameters: this runs on every session start, and a statement
# built per call pays for its construction and its cache key (the EXISTS subquery
# included) on every call. The cache key is memoized on this object, so each execution
# goes straight to the compiled form in the engine's cache. Public for bench/micro.py,
# which times other ways of running this very statement (parameters `agent_id`, `now`).
PRESENT_AGENT = (
    select(
        AgentRow.enforce_client_authz,
        AgentRow.version,
        AuthorizationOverrideRow.enforce_client_authz,
        AuthorizationOverrideRow.additional_clients,
    )
    .outerjoin(AuthorizationOverrideRow, AuthorizationOverrideRow.agent_id == AgentRow.agent_id)
    .where(
        AgentRow.agent_id == bindparam("agent_id"),
        exists().where(
            RegistrationRow.agent_id == AgentRow.agent_id,
            *_dispatchable(bindparam("now")),
        ),
    )
)


async def present_agent(db: Database, agent_id: str, now: datetime) -> AgentFacts | None:
    """The agent, with any operator override, if at least one registration is live and
    its worker connected.

    One statement, read-only: this runs on every session start."""
    row = await db.first_row(PRESENT_AGENT, {"agent_id": agent_id, "now": now})
    if row is None:
        return None
    return AgentFacts(bool(row[0]), row[1], row[2], decode_clients(row[3]))


async def claim_expired(
    session: AsyncSession, *, now: datetime, limit: int
) -> list[tuple[str, str]]:
    """Mark registrations whose presence lapsed as ended; (registration, agent) pairs.

    The UPDATE claims them atomically, so with several replicas each expiry is
    reported by exactly one of them.
    """
    stale = (
        select(RegistrationRow.registration_id)
        .where(RegistrationRow.ended_at.is_(None), RegistrationRow.expires_at <= now)
        .limit(limit)
    )
    result = await session.execute(
        update(RegistrationRow)
        .where(RegistrationRow.registration_id.in_(stale), RegistrationRow.ended_at.is_(None))
        .values(ended_at=now, end_reason="expired")
        .returning(RegistrationRow.registration_id, RegistrationRow.agent_id)
    )
    return [(row.registration_id, row.agent_id) for row in result]


async def agent_counts(session: AsyncSession, now: datetime) -> AgentCounts:
    registered = (await session.execute(select(func.count()).select_from(AgentRow))).scalar_one()
    present, live = (
        await session.execute(
            select(
                func.count(
                    func.distinct(case((and_(*_dispatchable(now)), RegistrationRow.agent_id)))
                ),
                func.count(),
            ).where(*_live(now))
        )
    ).one()
    return AgentCounts(int(registered), int(present), int(live))


async def agent_summaries(session: AsyncSession, now: datetime) -> list[AgentSummary]:
    """Every agent ever registered, with its live registrations counted."""
    live = (
        select(
            RegistrationRow.agent_id,
            func.sum(case((and_(*_live(now)), 1), else_=0)).label("active"),
            func.sum(case((and_(*_dispatchable(now)), 1), else_=0)).label("connected"),
            func.max(RegistrationRow.last_seen_at).label("last_seen"),
        )
        .group_by(RegistrationRow.agent_id)
        .subquery()
    )
    rows = await session.execute(
        select(AgentRow, live.c.active, live.c.connected, live.c.last_seen)
        .outerjoin(live, live.c.agent_id == AgentRow.agent_id)
        .order_by(AgentRow.agent_id)
    )
    return [
        AgentSummary(
            agent_id=agent.agent_id,
            enforce_client_authz=agent.enforce_client_authz,
            version=agent.version,
            first_registered_at=agent.first_registered_at,
            last_registered_at=agent.last_registered_at,
            last_heartbeat_at=last_seen,
            active_registrations=int(active or 0),
            connected_registrations=int(connected or 0),
        )
        for agent, active, connected, last_seen in rows
    ]
