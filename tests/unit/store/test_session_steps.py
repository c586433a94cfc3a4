"""Session steps against a real store (`lkps.store.sessions.apply_steps`): a batch of
steps changes each session as the same steps one at a time would, on both engines; on
PostgreSQL with one statement per kind of step and round, and without deadlocking
another replica's batch over the same rooms."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from lkps.sessions.records import SessionFacts, SessionGrant
from lkps.store import Database
from lkps.store.models import SessionRow
from lkps.store.sessions import (
    SessionStep,
    StepKind,
    apply_steps,
    claim_no_shows,
    find_session,
)
from tests.backends import TestDatabase

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
NUL_SID = "PA_\x00nul\ue000"
NUL_ROOM_SID = "RM_\x00room"


def grant(room: str) -> dict[str, Any]:
    return SessionGrant(
        session_id=f"id-{room}",
        room_name=room,
        agent_id="agent",
        via="session",
        actor_tenant_id="tid",
        actor_object_id="oid",
        actor_cwid="alice",
        client_app_id="client",
        app_only=False,
        dispatch_metadata="{}",
        granted_at=T0,
    ).row()


@pytest.fixture
async def db(database: TestDatabase) -> AsyncIterator[Database]:
    db = Database.from_url(database.url, pool_size=4)
    yield db
    await db.dispose()


async def granted(db: Database, *rooms: str, **columns: Any) -> None:
    """Sessions granted for `rooms` (with `columns` set on each, as earlier steps would)."""
    rows = [{**grant(room), **columns} for room in rooms]
    async with db.engine.begin() as connection:
        await connection.execute(insert(SessionRow), rows)


async def applied(db: Database, steps: list[SessionStep]) -> list[SessionFacts | None]:
    async with db.engine.begin() as connection:
        return await apply_steps(connection, steps)


def client(
    room: str, at: int = 1, *, sid: str = "PA_c", room_sid: str | None = "RM_1"
) -> SessionStep:
    return SessionStep(
        StepKind.CLIENT_JOINED, room, room_sid, T0 + timedelta(seconds=at), "alice", sid
    )


def agent(room: str, at: int = 2) -> SessionStep:
    return SessionStep(
        StepKind.AGENT_JOINED,
        room,
        "RM_1",
        T0 + timedelta(seconds=at),
        "agent-AJ_1",
        "PA_a",
        "AJ_1",
    )


def ended(room: str, at: int = 3, room_sid: str | None = "RM_1") -> SessionStep:
    return SessionStep(StepKind.ENDED, room, room_sid, T0 + timedelta(seconds=at))


def started(room: str, room_sid: str, at: int = 4) -> SessionStep:
    return SessionStep(StepKind.ROOM_STARTED, room, room_sid, T0 + timedelta(seconds=at))


async def test_a_batch_changes_each_session_as_its_steps_one_by_one_would(db: Database) -> None:
    await granted(db, "a", "b", "c", "d", "e")
    await granted(db, "f", room_sid="RM_1", ended_at=T0, state="ended", final_state="granted")
    steps = [
        client("a"),
        agent("a"),  # the same room again, after its client: both applied, in order
        ended("a"),
        client("b"),
        client("b", at=9),  # a repeat: applied once, the first
        ended("c", room_sid=None),  # an end that names no room: any room's
        ended("d", room_sid="RM_other"),  # d has no room id yet: its end
        started("e", "RM_e"),  # not ended: the room's id is noted, nothing recorded
        started("f", "RM_2"),  # ended: reopened
        started("f", "RM_2"),  # the same reopening: once
        client("nowhere"),  # a room LKPS did not grant
    ]

    changed = await applied(db, steps)

    assert [facts is not None for facts in changed] == [
        True,
        True,
        True,
        True,
        False,
        True,
        True,
        False,
        True,
        False,
        False,
    ]
    a_client, a_agent, a_end, b_client, _, c_end, d_end, _, f_reopened, _, _ = changed
    assert a_client is not None and a_client.state == "client_joined"
    assert a_agent is not None and (a_agent.state, a_agent.job_id) == ("agent_joined", "AJ_1")
    assert a_end is not None and (a_end.state, a_end.final_state) == ("ended", "agent_joined")
    assert a_end.duration_seconds == 2 and a_end.room_sid == "RM_1"
    assert b_client is not None and b_client.client_joined_at == T0 + timedelta(seconds=1)
    assert c_end is not None and (c_end.final_state, c_end.room_sid) == ("granted", None)
    assert d_end is not None and d_end.room_sid == "RM_other"
    assert f_reopened is not None and (f_reopened.state, f_reopened.reopened_room_sid) == (
        "reopened",
        "RM_2",
    )
    e = await find_session(db, "id-e")
    assert e is not None and (e.state, e.room_sid) == ("granted", "RM_e")
    b = await find_session(db, "id-b")
    assert b is not None and b.client_joined_at == T0 + timedelta(seconds=1)


async def test_nul_in_a_signed_events_values_is_stored_as_sent(db: Database) -> None:
    """LiveKit signs what it sends, NUL included: each value of the batch's arrays is
    escaped for PostgreSQL by its column's type, as a single value is, never a 503."""
    await granted(db, "a\x00room", "b")
    changed = await applied(
        db,
        [
            client("a\x00room", sid=NUL_SID, room_sid=NUL_ROOM_SID),
            client("b", sid=NUL_SID, room_sid=None),
            ended("a\x00room", room_sid=NUL_ROOM_SID),  # matches the stored (escaped) id
        ],
    )
    assert [facts is not None for facts in changed] == [True, True, True]
    first = await find_session(db, "id-a\x00room")
    assert first is not None
    assert (first.room_name, first.client_sid, first.room_sid, first.state) == (
        "a\x00room",
        NUL_SID,
        NUL_ROOM_SID,
        "ended",
    )
    second = await find_session(db, "id-b")
    assert second is not None and (second.client_sid, second.room_sid) == (NUL_SID, None)


def statements_of(connection: AsyncConnection) -> list[str]:
    """The statements run on `connection` from now on (their first words)."""
    seen: list[str] = []

    def before(*args: Any) -> None:
        seen.append(" ".join(str(args[2]).split()[:2]))

    event.listen(connection.sync_connection, "before_cursor_execute", before)
    return seen


@pytest.mark.backends("postgresql")
async def test_postgresql_applies_each_kind_of_step_with_one_statement_per_round(
    db: Database,
) -> None:
    rooms = [f"room-{index:02}" for index in range(20)]
    await granted(db, *rooms)
    steps = [client(room) for room in rooms] + [agent(room) for room in rooms[:5]]
    steps += [ended(room) for room in rooms[10:]] + [client(rooms[0], at=9)]
    async with db.engine.begin() as connection:
        seen = statements_of(connection)
        changed = await apply_steps(connection, sorted(steps, key=lambda step: step.room))
    # The rows locked, in room order; then a round of each room's first step (client
    # joins), of its second (agent joins and ends) and of its third (the repeat).
    assert seen == ["SELECT sessions.room_name"] + ["UPDATE sessions"] * 4
    assert sum(facts is not None for facts in changed) == 20 + 5 + 10


@pytest.mark.backends("postgresql")
async def test_postgresql_applies_a_batch_of_one_kind_with_one_statement(db: Database) -> None:
    rooms = [f"room-{index:02}" for index in range(20)]
    await granted(db, *rooms)
    async with db.engine.begin() as connection:
        seen = statements_of(connection)
        changed = await apply_steps(connection, [client(room) for room in reversed(rooms)])
    assert seen == ["UPDATE sessions"]  # locking its rows itself, in room order
    assert all(facts is not None for facts in changed)
    assert [facts.room_name for facts in changed if facts] == list(reversed(rooms))


async def waiting_for_locks(db: Database, count: int) -> None:
    """Until `count` of this database's statements wait for a row lock."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with asyncio.timeout(60):
        while True:
            async with db.engine.connect() as connection:
                if (await connection.execute(query)).scalar_one() >= count:
                    return
            await asyncio.sleep(0.02)


async def in_input_order(connection: AsyncConnection) -> None:
    """Plans that take an UPDATE's rows in the order of its input (the events' arrays):
    the order of its plan, which is not LKPS's to choose, at its worst."""
    for setting in ("enable_hashjoin", "enable_mergejoin", "enable_seqscan"):
        await connection.execute(text(f"SET LOCAL {setting} = off"))


# Two replicas' batches over rooms a, b, c: the first steps a, b, c, the second c, a,
# while someone holds b (a third batch). A batch that locks its rows as its UPDATEs meet
# them deadlocks once b is free: the first holds a and wants c, the second holds c and
# wants a. Locked in room order before any is changed, the second waits, holding nothing.
# As one statement per batch (one kind of step), and as several (two kinds).
OPPOSITE_BATCHES = {
    "one statement": (
        [client("a"), client("b"), client("c")],
        [agent("c"), agent("a")],
    ),
    "several statements": (
        [client("a"), client("b"), agent("c")],
        [client("c"), agent("a")],
    ),
}


@pytest.mark.backends("postgresql")
@pytest.mark.parametrize("batches", OPPOSITE_BATCHES.values(), ids=OPPOSITE_BATCHES.keys())
async def test_two_replicas_batches_over_the_same_rooms_in_opposite_orders_never_deadlock(
    db: Database, batches: tuple[list[SessionStep], list[SessionStep]]
) -> None:
    await granted(db, "a", "b", "c")

    async def batch(steps: list[SessionStep]) -> list[SessionFacts | None]:
        async with db.engine.begin() as connection:
            await in_input_order(connection)
            return await apply_steps(connection, steps)

    async with db.engine.connect() as holder:
        transaction = await holder.begin()
        await holder.execute(
            select(SessionRow.room_name).where(SessionRow.room_name == "b").with_for_update()
        )
        one = asyncio.create_task(batch(batches[0]))
        await waiting_for_locks(db, 1)
        two = asyncio.create_task(batch(batches[1]))
        await waiting_for_locks(db, 2)
        await transaction.commit()
    first, second = await asyncio.wait_for(asyncio.gather(one, two), 60)

    assert [facts is not None for facts in first] == [True, True, True]
    assert [facts is not None for facts in second] == [True, True]


@pytest.mark.backends("postgresql")
async def test_a_no_show_claim_skips_a_row_a_batch_holds_and_takes_it_at_the_next_scan(
    db: Database,
) -> None:
    # Three sessions whose client joined long ago, and no agent: all due. A batch of steps
    # holds b (its agent joining). The claim takes a and c without waiting for b, which
    # it would otherwise hold its a while waiting for: the start of a deadlock with a
    # batch that locks a after b.
    await granted(db, "a", "b", "c", state="client_joined", client_joined_at=T0)
    due = T0 + timedelta(seconds=10)

    async def claim() -> list[str]:
        async with db.engine.begin() as connection:
            claimed = await claim_no_shows(connection, joined_before=due, now=due, limit=100)
        return sorted(facts.room_name for facts in claimed)

    async with db.engine.connect() as holder:
        transaction = await holder.begin()
        await holder.execute(
            select(SessionRow.room_name).where(SessionRow.room_name == "b").with_for_update()
        )
        first = await asyncio.wait_for(claim(), 60)
        await transaction.commit()
    assert first == ["a", "c"]
    assert await claim() == ["b"]
    assert await claim() == []
