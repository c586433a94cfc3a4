"""Audit-trail queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Insert, Update, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.expression import ColumnClause
from sqlalchemy.types import TypeEngine

from lkps.audit.records import AuditRecord
from lkps.store.models import AuditChainHead, AuditRecordRow
from lkps.store.types import PortableString

_HEAD_ID = 1
_COLUMNS = [column.key for column in AuditRecordRow.__table__.columns]

# The writer's statements, built once (they run for every batch). The chain head is locked
# with a no-op UPDATE rather than `SELECT ... FOR UPDATE`: it takes the row lock on
# PostgreSQL and, being the transaction's first statement, SQLite's write lock, so a
# SQLite writer never has to upgrade a read snapshot (which fails instead of waiting).
_LOCK_HEAD = (
    update(AuditChainHead)
    .where(AuditChainHead.id == _HEAD_ID)
    .values(seq=AuditChainHead.seq)
    .returning(AuditChainHead.seq, AuditChainHead.hash)
)
_MOVE_HEAD = (
    update(AuditChainHead)
    .where(AuditChainHead.id == _HEAD_ID)
    .values(seq=bindparam("head_seq"), hash=bindparam("head_hash"))
)
_INSERT = insert(AuditRecordRow)


def _array_of(type_: TypeEngine[Any]) -> ARRAY[Any]:
    """A one-dimensional array of the column's type, without its length.

    The length goes because PostgreSQL truncates a value cast to `varchar(n)[]` in
    silence, but refuses an over-long one on insert into the column: this keeps that
    refusal (a 503) instead of a stored value that no longer matches its hash.
    """
    item = PortableString() if isinstance(type_, PortableString) else type_
    return ARRAY(item, dimensions=1)


def _append_unnested() -> Update:
    """PostgreSQL: a whole batch in one statement and one round trip, whatever its size.

    Each column travels as one array parameter (its elements converted by the column's
    own type, exactly as a single-row insert would), `unnest` turns the arrays back into
    rows, and the head moves in the same statement (a data-modifying CTE always runs to
    completion). One cached statement serves every batch size, where a multi-row VALUES
    would be compiled anew for each.
    """
    columns = list(AuditRecordRow.__table__.columns)
    rows = (
        func.unnest(*(bindparam(c.key, type_=_array_of(c.type)) for c in columns))
        .table_valued(*(ColumnClause(c.key, c.type) for c in columns))
        .render_derived()
    )
    inserted: Insert = insert(AuditRecordRow).from_select(_COLUMNS, select(*rows.c))
    return _MOVE_HEAD.add_cte(inserted.cte("inserted"))


_APPEND_UNNESTED = _append_unnested()


async def lock_chain_head(connection: AsyncConnection) -> tuple[int, str]:
    """The chain head (sequence number and hash), locked until the transaction ends."""
    row = (await connection.execute(_LOCK_HEAD)).one()
    return int(row.seq), str(row.hash)


async def append_records(
    connection: AsyncConnection, rows: Sequence[dict[str, Any]], seq: int, hash_: str
) -> None:
    """Insert chained `rows` and move the locked head to (`seq`, `hash_`), the last of them."""
    head = {"head_seq": seq, "head_hash": hash_}
    if connection.dialect.name == "postgresql":
        arrays = {name: [row[name] for row in rows] for name in _COLUMNS}
        await connection.execute(_APPEND_UNNESTED, arrays | head)
        return
    # SQLite has neither arrays nor data-modifying CTEs; it runs in-process, so the
    # driver's executemany (one call for the batch) costs no round trips either.
    await connection.execute(_INSERT, list(rows))
    await connection.execute(_MOVE_HEAD, head)


async def read_chain_head(session: AsyncSession) -> tuple[int, str]:
    row = (
        await session.execute(
            select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.id == _HEAD_ID)
        )
    ).one()
    return int(row.seq), str(row.hash)


async def records_after(
    session: AsyncSession, after_seq: int, limit: int, *, up_to: int | None = None
) -> list[AuditRecord]:
    """Up to `limit` records with `seq > after_seq`, oldest first (keyset paging)."""
    query = select(AuditRecordRow).where(AuditRecordRow.seq > after_seq)
    if up_to is not None:
        query = query.where(AuditRecordRow.seq <= up_to)
    result = await session.execute(query.order_by(AuditRecordRow.seq).limit(limit))
    return [_to_record(row) for row in result.scalars()]


async def latest_records(session: AsyncSession, limit: int) -> list[AuditRecord]:
    result = await session.execute(
        select(AuditRecordRow).order_by(AuditRecordRow.seq.desc()).limit(limit)
    )
    return [_to_record(row) for row in reversed(result.scalars().all())]


async def count_records(session: AsyncSession) -> int:
    return int(
        (await session.execute(select(func.count()).select_from(AuditRecordRow))).scalar_one()
    )


def _to_record(row: AuditRecordRow) -> AuditRecord:
    return AuditRecord(**{name: getattr(row, name) for name in _COLUMNS})


MAX_SEQ = 2**63 - 1  # BIGINT

_BEFORE_ALL = object()
_AFTER_ALL = object()


def _utc_bound(moment: datetime | None) -> datetime | object | None:
    """`moment` in UTC; or, when UTC cannot represent it (year 1 with a positive offset,
    year 9999 with a negative one), which side of every stored record it lies on."""
    if moment is None or moment.tzinfo is None:
        return moment  # naive: UTCDateTime refuses it
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        offset = moment.utcoffset() or timedelta(0)
        return _BEFORE_ALL if offset > timedelta(0) else _AFTER_ALL


@dataclass(frozen=True, slots=True)
class AuditFilter:
    event: str | None = None
    outcome: str | None = None
    agent_id: str | None = None
    client_app_id: str | None = None
    actor_cwid: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def query_records(
    session: AsyncSession,
    where: AuditFilter,
    *,
    limit: int,
    before_seq: int | None = None,
) -> list[AuditRecord]:
    """Matching records, newest first, strictly older than `before_seq` (keyset paging)."""
    since, until = _utc_bound(where.since), _utc_bound(where.until)
    if since is _AFTER_ALL or until is _BEFORE_ALL:
        return []
    query = select(AuditRecordRow)
    for column, value in (
        (AuditRecordRow.event, where.event),
        (AuditRecordRow.outcome, where.outcome),
        (AuditRecordRow.agent_id, where.agent_id),
        (AuditRecordRow.client_app_id, where.client_app_id),
        (AuditRecordRow.actor_cwid, where.actor_cwid),
    ):
        if value is not None:
            query = query.where(column == value)
    if isinstance(since, datetime):
        query = query.where(AuditRecordRow.occurred_at >= since)
    if isinstance(until, datetime):
        query = query.where(AuditRecordRow.occurred_at < until)
    if before_seq is not None and before_seq <= MAX_SEQ:
        # Every sequence number is below a larger cursor; neither engine takes one.
        query = query.where(AuditRecordRow.seq < before_seq)
    result = await session.execute(query.order_by(AuditRecordRow.seq.desc()).limit(limit))
    return [_to_record(row) for row in result.scalars()]
