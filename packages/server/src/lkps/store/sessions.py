"""Session queries. A session's row is stored with its grant's audit record, by the
audit writer (`lkps.store.audit`). Every step is one UPDATE that sets its column only while it is
still null and returns the row it changed: the replica whose statement matched is the
one that records the step, so a repeated or late event is recorded once, by one replica.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from lkps.sessions.records import (
    PROGRESS,
    SESSION_FIELDS,
    SessionFacts,
    SessionState,
)
from lkps.store.engine import Database
from lkps.store.models import SessionRow

_COLUMNS = [SessionRow.__table__.c[name] for name in SESSION_FIELDS]


def _facts(row: Sequence[Any]) -> SessionFacts:
    return SessionFacts(*row)


async def find_session(db: Database, session_id: str) -> SessionFacts | None:
    async def run(connection: AsyncConnection) -> SessionFacts | None:
        row = (
            await connection.execute(select(*_COLUMNS).where(SessionRow.session_id == session_id))
        ).first()
        return None if row is None else _facts(row)

    return await db.read(run)


async def list_sessions(
    db: Database,
    *,
    agent_id: str | None,
    since: datetime | None,
    state: str | None,
    limit: int,
) -> list[SessionFacts]:
    """Newest grants first."""
    conditions: list[ColumnElement[bool]] = []
    if agent_id is not None:
        conditions.append(SessionRow.agent_id == agent_id)
    if since is not None:
        conditions.append(SessionRow.granted_at >= since)
    if state is not None:
        conditions.append(SessionRow.state == state)
    statement = (
        select(*_COLUMNS)
        .where(*conditions)
        .order_by(SessionRow.granted_at.desc(), SessionRow.session_id)
        .limit(limit)
    )

    async def run(connection: AsyncConnection) -> list[SessionFacts]:
        return [_facts(row) for row in await connection.execute(statement)]

    return await db.read(run)


def _progressed(to: SessionState) -> ColumnElement[str]:
    """The state after a step to `to`: forward only, never out of ended or reopened."""
    earlier = [state.value for state in PROGRESS[: PROGRESS.index(to)]]
    return case((SessionRow.state.in_(earlier), to.value), else_=SessionRow.state)


async def _update_returning(
    db: Database, where: list[ColumnElement[bool]], values: dict[str, Any]
) -> list[SessionFacts]:
    statement = update(SessionRow).where(*where).values(**values).returning(*_COLUMNS)

    async def run(connection: AsyncConnection) -> list[SessionFacts]:
        return [_facts(row) for row in await connection.execute(statement)]

    return await db.statement(run)


async def _one(
    db: Database, where: list[ColumnElement[bool]], values: dict[str, Any]
) -> SessionFacts | None:
    rows = await _update_returning(db, where, values)
    return rows[0] if rows else None


async def note_room(db: Database, room_name: str, room_sid: str) -> None:
    """The room's LiveKit id, from the first event that carries it."""
    await _update_returning(
        db,
        [SessionRow.room_name == room_name, SessionRow.room_sid.is_(None)],
        {"room_sid": room_sid},
    )


def _room_sid(room_sid: str | None) -> dict[str, Any]:
    if not room_sid:
        return {}
    # The value bound with the column's type, as a plain comparison would: a bare one
    # in a CASE is bound as VARCHAR, skipping PortableText's NUL escaping (PostgreSQL
    # refused a signed event's sid with a NUL: 503).
    sid = literal(room_sid, SessionRow.room_sid.type)
    return {"room_sid": case((SessionRow.room_sid.is_(None), sid), else_=SessionRow.room_sid)}


async def client_joined(
    db: Database, room_name: str, *, identity: str, sid: str, room_sid: str | None, now: datetime
) -> SessionFacts | None:
    return await _one(
        db,
        [SessionRow.room_name == room_name, SessionRow.client_joined_at.is_(None)],
        {
            "client_joined_at": now,
            "client_identity": identity,
            "client_sid": sid,
            "state": _progressed(SessionState.CLIENT_JOINED),
            **_room_sid(room_sid),
        },
    )


async def agent_joined(
    db: Database,
    room_name: str,
    *,
    identity: str,
    sid: str,
    job_id: str | None,
    room_sid: str | None,
    now: datetime,
) -> SessionFacts | None:
    return await _one(
        db,
        [SessionRow.room_name == room_name, SessionRow.agent_joined_at.is_(None)],
        {
            "agent_joined_at": now,
            "agent_identity": identity,
            "agent_sid": sid,
            "job_id": job_id,
            "state": _progressed(SessionState.AGENT_JOINED),
            **_room_sid(room_sid),
        },
    )


async def ended(
    db: Database, room_name: str, *, room_sid: str | None, now: datetime
) -> SessionFacts | None:
    """The session's first end. A room LiveKit recreated (reopened) ends as `ended`
    again, without a second end time: the session's end stays the first."""
    conditions = [SessionRow.room_name == room_name, SessionRow.ended_at.is_(None)]
    if room_sid:
        # The end of a room other than the session's own (its reopening) is not its end.
        conditions.append((SessionRow.room_sid.is_(None)) | (SessionRow.room_sid == room_sid))
    return await _one(
        db,
        conditions,
        {
            "ended_at": now,
            "final_state": SessionRow.state,
            "state": SessionState.ENDED.value,
            **_room_sid(room_sid),
        },
    )


async def reopened(
    db: Database, room_name: str, *, room_sid: str, now: datetime
) -> SessionFacts | None:
    """A room of this name started again, with another LiveKit id, after the session
    ended: LiveKit recreated it from a token still valid. Once per recreated room."""
    return await _one(
        db,
        [
            SessionRow.room_name == room_name,
            SessionRow.ended_at.is_not(None),
            SessionRow.room_sid.is_not(None),
            SessionRow.room_sid != room_sid,
            SessionRow.reopened_room_sid.is_(None) | (SessionRow.reopened_room_sid != room_sid),
        ],
        {
            "reopened_at": now,
            "reopened_room_sid": room_sid,
            "state": SessionState.REOPENED.value,
        },
    )


async def claim_no_shows(
    db: Database, *, joined_before: datetime, now: datetime, limit: int
) -> list[SessionFacts]:
    """Sessions whose client joined before `joined_before` and whose agent has not:
    marked agent-missing (stage 1) by this one statement, so one replica alone handles
    each."""
    waiting = (
        select(SessionRow.session_id)
        .where(
            SessionRow.state == SessionState.CLIENT_JOINED.value,
            SessionRow.client_joined_at <= joined_before,
            SessionRow.no_show_stage == 0,
        )
        .limit(limit)
    )
    return await _update_returning(
        db,
        [
            SessionRow.session_id.in_(waiting),
            SessionRow.no_show_stage == 0,
            SessionRow.agent_joined_at.is_(None),
            SessionRow.ended_at.is_(None),
        ],
        {"no_show_stage": 1, "agent_missing_at": now},
    )


async def claim_retry_no_shows(
    db: Database, *, missing_before: datetime, limit: int
) -> list[SessionFacts]:
    """Sessions re-dispatched before `missing_before` whose agent still has not joined:
    stage 2, once, by one replica."""
    waiting = (
        select(SessionRow.session_id)
        .where(
            SessionRow.state == SessionState.CLIENT_JOINED.value,
            SessionRow.no_show_stage == 1,
            SessionRow.agent_missing_at <= missing_before,
        )
        .limit(limit)
    )
    return await _update_returning(
        db,
        [
            SessionRow.session_id.in_(waiting),
            SessionRow.no_show_stage == 1,
            SessionRow.agent_joined_at.is_(None),
            SessionRow.ended_at.is_(None),
        ],
        {"no_show_stage": 2},
    )


async def note_redispatch(db: Database, session_id: str, dispatch_id: str) -> None:
    await _update_returning(
        db, [SessionRow.session_id == session_id], {"redispatch_id": dispatch_id}
    )


async def restore(db: Database, session_id: str, values: dict[str, Any]) -> None:
    """Put back what a step changed, when its audit record could not be written: the
    step is then applied again, with its record, when LiveKit sends the event again."""
    await _update_returning(db, [SessionRow.session_id == session_id], values)
