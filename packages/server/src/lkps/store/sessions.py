"""Session queries. A session's row is stored with its grant's audit record, by the
audit writer (`lkps.store.audit`). Every step is one UPDATE that sets its column only while it is
still null and returns the row it changed: the replica whose statement matched is the
one that records the step, so a repeated or late event is recorded once, by one replica.
Steps run on the caller's connection, inside the transaction that also stores their
audit records (`AuditLog.change`): a step and its record are committed together or not
at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    bindparam,
    case,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningUpdate

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
    """The state after a step to `to`: forward only, never out of ended or reopened.
    The states are LKPS's own names, written into the statement: an IN list of bound
    values would be expanded anew on every execution."""
    earlier = [SessionRow.state == literal_column(f"'{state.value}'") for state in PROGRESS]
    return case((or_(*earlier[: PROGRESS.index(to)]), to.value), else_=SessionRow.state)


async def _update_returning(
    connection: AsyncConnection, where: list[ColumnElement[bool]], values: dict[str, Any]
) -> list[SessionFacts]:
    statement = update(SessionRow).where(*where).values(**values).returning(*_COLUMNS)
    return [_facts(row) for row in await connection.execute(statement)]


# The steps. Each statement is built once, with bound parameters: SQLAlchemy then finds
# it compiled by its cache key, which it keeps on the statement, instead of building,
# keying and looking up a new statement for every event (most of a step's CPU time).
# They run on the caller's connection, in the transaction that also stores the step's
# audit record (`lkps.sessions.lifecycle`).


def _sid(name: str) -> BindParameter[str]:
    # Bound with the column's type, as a plain comparison would: a bare value in a CASE
    # is bound as VARCHAR, skipping PortableText's NUL escaping (PostgreSQL refused a
    # signed event's sid with a NUL: 503).
    return bindparam(name, type_=SessionRow.room_sid.type)


# The room's LiveKit id, from the first event that carries it (None leaves it as it is).
_FIRST_ROOM_SID = case(
    (SessionRow.room_sid.is_(None), _sid("event_room_sid")), else_=SessionRow.room_sid
)
_NOW = bindparam("now", type_=SessionRow.ended_at.type)
_ROOM = SessionRow.room_name == bindparam("room", type_=SessionRow.room_name.type)


def _step(*where: ColumnElement[bool], **values: Any) -> ReturningUpdate[Any]:
    return update(SessionRow).where(_ROOM, *where).values(**values).returning(*_COLUMNS)


_CLIENT_JOINED = _step(
    SessionRow.client_joined_at.is_(None),
    client_joined_at=_NOW,
    client_identity=bindparam("identity"),
    client_sid=bindparam("sid"),
    state=_progressed(SessionState.CLIENT_JOINED),
    room_sid=_FIRST_ROOM_SID,
)
_AGENT_JOINED = _step(
    SessionRow.agent_joined_at.is_(None),
    agent_joined_at=_NOW,
    agent_identity=bindparam("identity"),
    agent_sid=bindparam("sid"),
    job_id=bindparam("job"),
    state=_progressed(SessionState.AGENT_JOINED),
    room_sid=_FIRST_ROOM_SID,
)
_ENDED_VALUES: dict[str, Any] = {
    "ended_at": _NOW,
    "final_state": SessionRow.state,
    "state": SessionState.ENDED.value,
    "room_sid": _FIRST_ROOM_SID,
}
# The end of a room other than the session's own (its reopening) is not its end.
_ENDED_IN_ROOM = _step(
    SessionRow.ended_at.is_(None),
    SessionRow.room_sid.is_(None) | (SessionRow.room_sid == _sid("event_room_sid")),
    **_ENDED_VALUES,
)
_ENDED_ANY_ROOM = _step(SessionRow.ended_at.is_(None), **_ENDED_VALUES)
_REOPENED = _step(
    SessionRow.ended_at.is_not(None),
    SessionRow.room_sid.is_not(None),
    SessionRow.room_sid != _sid("event_room_sid"),
    SessionRow.reopened_room_sid.is_(None)
    | (SessionRow.reopened_room_sid != _sid("event_room_sid")),
    reopened_at=_NOW,
    reopened_room_sid=_sid("event_room_sid"),
    state=SessionState.REOPENED.value,
)
_NOTE_ROOM = (
    update(SessionRow)
    .where(_ROOM, SessionRow.room_sid.is_(None))
    .values(room_sid=_sid("event_room_sid"))
)


async def _first(
    connection: AsyncConnection, statement: ReturningUpdate[Any], parameters: dict[str, Any]
) -> SessionFacts | None:
    row = (await connection.execute(statement, parameters)).first()
    return None if row is None else _facts(row)


async def client_joined(
    connection: AsyncConnection,
    room_name: str,
    *,
    identity: str,
    sid: str,
    room_sid: str | None,
    now: datetime,
) -> SessionFacts | None:
    return await _first(
        connection,
        _CLIENT_JOINED,
        {
            "room": room_name,
            "identity": identity,
            "sid": sid,
            "event_room_sid": room_sid,
            "now": now,
        },
    )


async def agent_joined(
    connection: AsyncConnection,
    room_name: str,
    *,
    identity: str,
    sid: str,
    job_id: str | None,
    room_sid: str | None,
    now: datetime,
) -> SessionFacts | None:
    return await _first(
        connection,
        _AGENT_JOINED,
        {
            "room": room_name,
            "identity": identity,
            "sid": sid,
            "job": job_id,
            "event_room_sid": room_sid,
            "now": now,
        },
    )


async def ended(
    connection: AsyncConnection, room_name: str, *, room_sid: str | None, now: datetime
) -> SessionFacts | None:
    """The session's first end. A room LiveKit recreated (reopened) ends as `ended`
    again, without a second end time: the session's end stays the first."""
    statement = _ENDED_IN_ROOM if room_sid else _ENDED_ANY_ROOM
    return await _first(
        connection, statement, {"room": room_name, "event_room_sid": room_sid or None, "now": now}
    )


async def reopened(
    connection: AsyncConnection, room_name: str, *, room_sid: str, now: datetime
) -> SessionFacts | None:
    """A room of this name started again, with another LiveKit id, after the session
    ended: LiveKit recreated it from a token still valid. Once per recreated room."""
    return await _first(
        connection, _REOPENED, {"room": room_name, "event_room_sid": room_sid, "now": now}
    )


async def note_room(connection: AsyncConnection, room_name: str, room_sid: str) -> None:
    """The room's LiveKit id, from the first event that carries it."""
    await connection.execute(_NOTE_ROOM, {"room": room_name, "event_room_sid": room_sid})


async def claim_no_shows(
    connection: AsyncConnection, *, joined_before: datetime, now: datetime, limit: int
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
        connection,
        [
            SessionRow.session_id.in_(waiting),
            SessionRow.no_show_stage == 0,
            SessionRow.agent_joined_at.is_(None),
            SessionRow.ended_at.is_(None),
        ],
        {"no_show_stage": 1, "agent_missing_at": now},
    )


async def claim_retry_no_shows(
    connection: AsyncConnection, *, missing_before: datetime, limit: int
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
        connection,
        [
            SessionRow.session_id.in_(waiting),
            SessionRow.no_show_stage == 1,
            SessionRow.agent_joined_at.is_(None),
            SessionRow.ended_at.is_(None),
        ],
        {"no_show_stage": 2},
    )


async def note_redispatch(connection: AsyncConnection, session_id: str, dispatch_id: str) -> None:
    await _update_returning(
        connection, [SessionRow.session_id == session_id], {"redispatch_id": dispatch_id}
    )
