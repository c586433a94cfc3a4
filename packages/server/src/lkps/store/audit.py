"""Audit-trail queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from lkps.audit.records import AuditRecord
from lkps.store.models import AuditChainHead, AuditRecordRow

_HEAD_ID = 1
_COLUMNS = [column.key for column in AuditRecordRow.__table__.columns]


async def lock_chain_head(session: AsyncSession) -> tuple[int, str]:
    """The chain head, locked until the transaction ends.

    A no-op UPDATE rather than `SELECT ... FOR UPDATE`: it takes the row lock on
    PostgreSQL and, being the transaction's first statement, SQLite's write lock, so a
    SQLite writer never has to upgrade a read snapshot (which fails instead of waiting).
    """
    row = (
        await session.execute(
            update(AuditChainHead)
            .where(AuditChainHead.id == _HEAD_ID)
            .values(seq=AuditChainHead.seq)
            .returning(AuditChainHead.seq, AuditChainHead.hash)
        )
    ).one()
    return int(row.seq), str(row.hash)


async def read_chain_head(session: AsyncSession) -> tuple[int, str]:
    row = (
        await session.execute(
            select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.id == _HEAD_ID)
        )
    ).one()
    return int(row.seq), str(row.hash)


async def insert_records(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    await session.execute(insert(AuditRecordRow), list(rows))


async def advance_chain_head(session: AsyncSession, seq: int, hash_: str) -> None:
    await session.execute(
        update(AuditChainHead).where(AuditChainHead.id == _HEAD_ID).values(seq=seq, hash=hash_)
    )


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
    if where.since is not None:
        query = query.where(AuditRecordRow.occurred_at >= where.since)
    if where.until is not None:
        query = query.where(AuditRecordRow.occurred_at < where.until)
    if before_seq is not None:
        query = query.where(AuditRecordRow.seq < before_seq)
    result = await session.execute(query.order_by(AuditRecordRow.seq.desc()).limit(limit))
    return [_to_record(row) for row in result.scalars()]
