"""Session queries. A session's row is stored with its grant's audit record, by the
audit writer (`lkps.store.audit`). Every step is an UPDATE that sets its column only while
it is still null and returns the row it changed: the replica whose statement matched is
the one that records the step, so a repeated or late event is recorded once, by one
replica. Steps run on the caller's connection, inside the transaction that also stores
their audit records (`AuditLog.change`): a step and its record are committed together or
not at all. On PostgreSQL a batch's steps of one kind are one UPDATE for all their rows
(`apply_steps`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    any_,
    bindparam,
    case,
    column,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import TypeEngine

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


# The steps. Each kind of step is defined once, over its event's values as SQL
# expressions: the condition under which the event changes the session's row, and what it
# sets there. From that one definition come two statements (`_Statements`), each built
# once, with bound parameters: SQLAlchemy then finds it compiled by its cache key, which
# it keeps on the statement, instead of building, keying and looking up a new statement
# for every event (most of a step's CPU time).
# - `one`, for one event: its values are bound parameters (SQLite, which has no arrays);
# - `many`, for several events of one kind, each of another room (PostgreSQL): each value
#   is an array with an element per event, unnested into a row per event
#   (`UPDATE sessions ... FROM unnest(...) WITH ORDINALITY AS e(room, ..., n)`), and each
#   row changed is returned with its event's position, `e.n`.
# They run on the caller's connection, in the transaction that also stores the steps'
# audit records (`lkps.sessions.lifecycle`).


class StepKind(StrEnum):
    CLIENT_JOINED = "client_joined"
    AGENT_JOINED = "agent_joined"
    ENDED = "ended"
    # A room of the session's name started: it is reopened (a room LiveKit recreated
    # after the end), or its LiveKit id is noted.
    ROOM_STARTED = "room_started"


@dataclass(frozen=True, slots=True)
class SessionStep:
    """One event's step, and the values its statement takes from the event (the names
    of `_INPUT_TYPES`)."""

    kind: StepKind
    room: str
    # The room's LiveKit id; None when the event did not carry one.
    room_sid: str | None
    now: datetime
    identity: str = ""
    sid: str = ""
    job: str | None = None


# Each input has the type of the column it is compared with or written to, so that its
# values are converted as a plain comparison would convert them, one by one inside an
# array too: a bare value in a CASE is bound as VARCHAR, skipping PortableText's NUL
# escaping (PostgreSQL refused a signed event's sid with a NUL: 503).
_INPUT_TYPES: dict[str, TypeEngine[Any]] = {
    "room": SessionRow.room_name.type,
    "room_sid": SessionRow.room_sid.type,
    "now": SessionRow.ended_at.type,
    "identity": SessionRow.client_identity.type,
    "sid": SessionRow.client_sid.type,
    "job": SessionRow.job_id.type,
}

# An event's values, as SQL expressions (by the names of `_INPUT_TYPES`).
_Event = Mapping[str, ColumnElement[Any]]
# A step's definition: the conditions on the row (besides its room), and its new values.
_Change = tuple[Sequence[ColumnElement[bool]], Mapping[str, Any]]


def _bound(name: str) -> str:
    """An input's parameter: not a column's name, which SQLAlchemy keeps for the values
    of an UPDATE's SET clause."""
    return f"event_{name}"


def _array_of(type_: TypeEngine[Any]) -> ARRAY[Any]:
    return ARRAY(type_, dimensions=1)


@dataclass(frozen=True, eq=False)
class _Statements:
    """One kind of step's statements, built from its definition (see above)."""

    inputs: tuple[str, ...]
    one: UpdateBase
    many: UpdateBase
    # `many` taking its events from a subquery that locks their rows first, in room
    # order: for a batch that is this one statement (see `_apply_many`).
    many_locking: UpdateBase
    # Run for the events `one` or `many` did not change (a room started that was not
    # reopened has its id noted).
    otherwise: _Statements | None = None


def _statements(
    inputs: tuple[str, ...],
    define: Callable[[_Event], _Change],
    *,
    returning: bool = True,
    otherwise: _Statements | None = None,
) -> _Statements:
    names = ("room", *inputs)
    one = {name: bindparam(_bound(name), type_=_INPUT_TYPES[name]) for name in names}
    unnested = (
        func.unnest(
            *(bindparam(_bound(name), type_=_array_of(_INPUT_TYPES[name])) for name in names)
        )
        .table_valued(*(column(name, _INPUT_TYPES[name]) for name in names), with_ordinality="n")
        .render_derived(name="e")
    )
    many = {name: unnested.c[name] for name in names}
    rows = aliased(SessionRow, name="locked")
    locking = (
        select(*unnested.c)
        .join(rows, rows.room_name == unnested.c.room)
        .order_by(rows.room_name)
        .with_for_update(of=rows)
        .subquery("e")
    )
    many_locking = {name: locking.c[name] for name in names}

    def statement(event: _Event, *position: ColumnElement[Any]) -> UpdateBase:
        where, values = define(event)
        changed = update(SessionRow).where(SessionRow.room_name == event["room"], *where)
        changed = changed.values(**values)
        return changed.returning(*position, *_COLUMNS) if returning else changed

    return _Statements(
        inputs=names,
        one=statement(one),
        many=statement(many, unnested.c.n),
        many_locking=statement(many_locking, locking.c.n),
        otherwise=otherwise,
    )


def _first_room_sid(event: _Event) -> ColumnElement[str | None]:
    """The room's LiveKit id, from the first event that carries it (None leaves it as
    it is)."""
    return case((SessionRow.room_sid.is_(None), event["room_sid"]), else_=SessionRow.room_sid)


def _client_joined(event: _Event) -> _Change:
    return [SessionRow.client_joined_at.is_(None)], {
        "client_joined_at": event["now"],
        "client_identity": event["identity"],
        "client_sid": event["sid"],
        "state": _progressed(SessionState.CLIENT_JOINED),
        "room_sid": _first_room_sid(event),
    }


def _agent_joined(event: _Event) -> _Change:
    return [SessionRow.agent_joined_at.is_(None)], {
        "agent_joined_at": event["now"],
        "agent_identity": event["identity"],
        "agent_sid": event["sid"],
        "job_id": event["job"],
        "state": _progressed(SessionState.AGENT_JOINED),
        "room_sid": _first_room_sid(event),
    }


def _ended_values(event: _Event) -> dict[str, Any]:
    return {
        "ended_at": event["now"],
        "final_state": SessionRow.state,
        "state": SessionState.ENDED.value,
        "room_sid": _first_room_sid(event),
    }


def _ended_in_room(event: _Event) -> _Change:
    # The end of a room other than the session's own (its reopening) is not its end.
    return [
        SessionRow.ended_at.is_(None),
        SessionRow.room_sid.is_(None) | (SessionRow.room_sid == event["room_sid"]),
    ], _ended_values(event)


def _ended_any_room(event: _Event) -> _Change:
    return [SessionRow.ended_at.is_(None)], _ended_values(event)


def _reopened(event: _Event) -> _Change:
    """A room of this name started again, with another LiveKit id, after the session
    ended: LiveKit recreated it from a token still valid. Once per recreated room."""
    return [
        SessionRow.ended_at.is_not(None),
        SessionRow.room_sid.is_not(None),
        SessionRow.room_sid != event["room_sid"],
        SessionRow.reopened_room_sid.is_(None)
        | (SessionRow.reopened_room_sid != event["room_sid"]),
    ], {
        "reopened_at": event["now"],
        "reopened_room_sid": event["room_sid"],
        "state": SessionState.REOPENED.value,
    }


def _note_room(event: _Event) -> _Change:
    """The room's LiveKit id, from the first event that carries it."""
    return [SessionRow.room_sid.is_(None)], {"room_sid": event["room_sid"]}


_CLIENT_JOINED = _statements(("identity", "sid", "room_sid", "now"), _client_joined)
_AGENT_JOINED = _statements(("identity", "sid", "job", "room_sid", "now"), _agent_joined)
_ENDED_IN_ROOM = _statements(("room_sid", "now"), _ended_in_room)
_ENDED_ANY_ROOM = _statements(("room_sid", "now"), _ended_any_room)
_ROOM_STARTED = _statements(
    ("room_sid", "now"),
    _reopened,
    otherwise=_statements(("room_sid",), _note_room, returning=False),
)
# Rows locked in room order (see `_apply_many`).
_LOCK_ROOMS = (
    select(SessionRow.room_name)
    .where(SessionRow.room_name == any_(bindparam("rooms", type_=_array_of(_INPUT_TYPES["room"]))))
    .order_by(SessionRow.room_name)
    .with_for_update()
)


def _statements_of(step: SessionStep) -> _Statements:
    if step.kind == StepKind.CLIENT_JOINED:
        return _CLIENT_JOINED
    if step.kind == StepKind.AGENT_JOINED:
        return _AGENT_JOINED
    if step.kind == StepKind.ENDED:
        # The session's first end. A room LiveKit recreated (reopened) ends as `ended`
        # again, without a second end time: the session's end stays the first.
        return _ENDED_IN_ROOM if step.room_sid else _ENDED_ANY_ROOM
    return _ROOM_STARTED


async def apply_steps(
    connection: AsyncConnection, steps: Sequence[SessionStep]
) -> list[SessionFacts | None]:
    """`steps` applied in their order, on `connection`: for each, the row it changed, or
    None (applied before, or a room LKPS did not grant).

    One statement per step on SQLite. On PostgreSQL one per kind of step, for all the
    steps of that kind (`_apply_many`)."""
    if connection.dialect.name == "postgresql":
        return await _apply_many(connection, steps)
    return [await _apply_one(connection, step, _statements_of(step)) for step in steps]


async def _apply_one(
    connection: AsyncConnection, step: SessionStep, statements: _Statements
) -> SessionFacts | None:
    row = (await connection.execute(statements.one, _values(statements, step))).first()
    if row is None and (otherwise := statements.otherwise) is not None:
        await connection.execute(otherwise.one, _values(otherwise, step))
    return None if row is None else _facts(row)


def _values(statements: _Statements, step: SessionStep) -> dict[str, Any]:
    return {_bound(name): getattr(step, name) for name in statements.inputs}


async def _apply_many(
    connection: AsyncConnection, steps: Sequence[SessionStep]
) -> list[SessionFacts | None]:
    """PostgreSQL: `steps` applied with one statement per kind of step, round by round.

    A room that comes more than once (its client's join and its agent's; a repeat) is in
    successive rounds, one step per round, in the order of its steps: an UPDATE ... FROM
    changes a row once, from any one of the events that match it, so one statement never
    sees a room twice.

    The rows are locked in room order before any is changed: a multi-row UPDATE locks
    rows in the order of its plan, not of its input, and two replicas' batches locking
    the same rows in different orders would wait for each other. A batch that is one
    statement locks them itself (`many_locking`: its events come from a subquery that
    locks their rows, sorted, before the UPDATE meets them), saving a round trip in
    which the transaction waits for this process. Otherwise one statement locks them
    all first, and only the rooms locked are stepped: a row that appeared since (a
    grant committed meanwhile) would be locked out of order, so its event is taken as
    one that came before its grant (as it would have, a moment earlier).
    """
    changed: list[SessionFacts | None] = [None] * len(steps)
    rooms = {step.room for step in steps}
    rounds = _rounds(steps, rooms)
    locking = len(rooms) > 1 and len(rounds) == 1 and len(rounds[0]) == 1
    if len(rooms) > 1 and not locking:
        locked = await connection.execute(_LOCK_ROOMS, {"rooms": list(rooms)})
        rounds = _rounds(steps, {room for (room,) in locked})
    for one_round in rounds:
        for statements, indexes in one_round.items():
            together = await _apply_together(
                connection, statements, [steps[i] for i in indexes], locking=locking
            )
            for index, facts in zip(indexes, together, strict=True):
                changed[index] = facts
    return changed


def _rounds(steps: Sequence[SessionStep], rooms: set[str]) -> list[dict[_Statements, list[int]]]:
    """The positions of the steps of `rooms`, by round (a room's first step, its second,
    ...) and, in each, by statement."""
    rounds: list[dict[_Statements, list[int]]] = []
    seen: dict[str, int] = {}
    for index, step in enumerate(steps):
        if step.room not in rooms:
            continue
        position = seen[step.room] = seen.get(step.room, -1) + 1
        if position == len(rounds):
            rounds.append({})
        rounds[position].setdefault(_statements_of(step), []).append(index)
    return rounds


def _arrays(statements: _Statements, steps: Sequence[SessionStep]) -> dict[str, list[Any]]:
    return {_bound(name): [getattr(step, name) for step in steps] for name in statements.inputs}


async def _apply_together(
    connection: AsyncConnection,
    statements: _Statements,
    steps: Sequence[SessionStep],
    *,
    locking: bool = False,
) -> list[SessionFacts | None]:
    """`steps`, each of another room, applied by one statement (`locking` their rows
    first, in room order): for each, the row it changed or None. One step alone goes by
    its own statement, with scalar parameters: measured cheaper than arrays of one."""
    if len(steps) == 1:
        return [await _apply_one(connection, steps[0], statements)]
    changed: list[SessionFacts | None] = [None] * len(steps)
    statement = statements.many_locking if locking else statements.many
    for n, *row in await connection.execute(statement, _arrays(statements, steps)):
        changed[n - 1] = _facts(row)
    if statements.otherwise is not None:
        rest = [step for step, facts in zip(steps, changed, strict=True) if facts is None]
        if rest:
            await connection.execute(statements.otherwise.many, _arrays(statements.otherwise, rest))
    return changed


async def claim_no_shows(
    connection: AsyncConnection, *, joined_before: datetime, now: datetime, limit: int
) -> list[SessionFacts]:
    """Sessions whose client joined before `joined_before` and whose agent has not:
    marked agent-missing (stage 1) by this one statement, so one replica alone handles
    each.

    A row another transaction holds (a batch of steps: the agent may be joining right
    now) is skipped, not waited for, and left to the next scan: a claim that waited
    would hold the rows it had already taken, in its plan's order, and a batch locking
    its rooms in room order could be waiting for one of them (a deadlock, found by
    PostgreSQL after a second and ending in the batch's events retried one by one).
    SQLite has no row locks (its writers take turns), and no such clause."""
    waiting = (
        select(SessionRow.session_id)
        .where(
            SessionRow.state == SessionState.CLIENT_JOINED.value,
            SessionRow.client_joined_at <= joined_before,
            SessionRow.no_show_stage == 0,
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
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
    stage 2, once, by one replica; rows held elsewhere are skipped, as in
    `claim_no_shows`."""
    waiting = (
        select(SessionRow.session_id)
        .where(
            SessionRow.state == SessionState.CLIENT_JOINED.value,
            SessionRow.no_show_stage == 1,
            SessionRow.agent_missing_at <= missing_before,
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
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
