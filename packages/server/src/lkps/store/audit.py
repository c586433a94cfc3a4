"""Audit-trail queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import TextClause, bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.types import LargeBinary, Text, TypeEngine

from lkps.audit.chain import HashedText
from lkps.audit.records import AuditFilter, AuditRecord
from lkps.store.models import AuditChainHead, AuditCheckpointRow, AuditRecordRow, SessionRow
from lkps.store.types import PortableString

_HEAD_ID = 1
_COLUMNS = [column.key for column in AuditRecordRow.__table__.columns]

# SQLite's writer statements, built once (they run for every batch). The chain head is
# locked with a no-op UPDATE rather than `SELECT ... FOR UPDATE`: being the transaction's
# first statement, it takes SQLite's write lock, so the writer never has to upgrade a
# read snapshot (which fails instead of waiting).
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
_INSERT_SESSIONS = insert(SessionRow)

# A granted session's row (`lkps.sessions.records.SessionGrant.row`) is stored by the
# statement that stores its grant's record: one commit for both, so no token leaves
# without its session, and no session stays behind a grant that was not recorded.
GRANTED_SESSION_COLUMNS = (
    "session_id",
    "room_name",
    "agent_id",
    "state",
    "via",
    "actor_tenant_id",
    "actor_object_id",
    "actor_cwid",
    "client_app_id",
    "app_only",
    "dispatch_metadata",
    "granted_at",
    "no_show_stage",
)


def _array_of(type_: TypeEngine[Any]) -> ARRAY[Any]:
    """A one-dimensional array of the column's type, without its length.

    The length goes because PostgreSQL truncates a value cast to `varchar(n)[]` in
    silence, but refuses an over-long one on insert into the column: this keeps that
    refusal (a 503) instead of a stored value that no longer matches its hash.
    """
    item = PortableString() if isinstance(type_, PortableString) else type_
    return ARRAY(item, dimensions=1)


# What a writer supplies; the chain links (`seq`, `prev_hash`, `hash`) come from the head.
_CONTENT = [name for name in _COLUMNS if name not in {"seq", "prev_hash", "hash"}]
_TEXT_PARTS = ("before_prev", "before_seq", "after_seq")
# Each record's HMAC pads (lkps.audit.chain.hmac_pads), null for an unkeyed record.
_PADS = ("ipad", "opad")


def _append_chained(*, with_sessions: bool) -> TextClause:
    """PostgreSQL: a whole batch chained, stored and committed in one statement (with
    the sessions its grants opened, `with_sessions`).

    The chain head is locked, each record's hash computed from the one before it (a
    recursive CTE filling the links into its hashed text, see `HashedText`, and taking
    its HMAC-SHA256 from the record's own key pads with core `sha256()`: no pgcrypto,
    and the audit key itself never reaches the database), the
    records inserted and the head moved, all inside PostgreSQL. Run in autocommit, the
    head stays locked for the statement and its commit only: no round trip to the
    writer, and no wait for the writer's event loop, happens while other replicas wait
    for the head. Each column travels as one array parameter, its elements converted by
    the column's own type exactly as a single-row insert would.
    """
    columns = AuditRecordRow.__table__.columns
    session_columns = SessionRow.__table__.columns
    content = ", ".join(_CONTENT)
    arrays = ", ".join(f":{name}" for name in (*_CONTENT, *_TEXT_PARTS, *_PADS))
    session_arrays = ", ".join(f":session_{name}" for name in GRANTED_SESSION_COLUMNS)
    sessions = (
        f"""
        granted_sessions AS (
            INSERT INTO sessions ({", ".join(GRANTED_SESSION_COLUMNS)})
            SELECT * FROM unnest({session_arrays})
        ),"""  # noqa: S608
        if with_sessions
        else ""
    )
    # Only the model's column names are spliced in; every value is a bound parameter.
    statement = text(
        f"""
        WITH RECURSIVE
        head AS (
            SELECT seq, hash FROM audit_chain_head WHERE id = {_HEAD_ID} FOR UPDATE
        ),
        batch AS (
            SELECT * FROM unnest({arrays})
                WITH ORDINALITY AS b({content}, {", ".join((*_TEXT_PARTS, *_PADS))}, n)
        ),
        chain (n, seq, prev_hash, hash) AS (
            SELECT 0::bigint, seq, NULL::varchar, hash::varchar FROM head
            UNION ALL
            SELECT b.n, c.seq + 1, c.hash,
                encode(CASE WHEN b.ipad IS NULL THEN sha256(t.text)
                    ELSE sha256(b.opad || sha256(b.ipad || t.text)) END, 'hex')::varchar
            FROM chain c JOIN batch b ON b.n = c.n + 1,
            LATERAL (SELECT convert_to(
                b.before_prev || c.hash || b.before_seq || (c.seq + 1) || b.after_seq,
                'UTF8') AS text) AS t
        ),
        inserted AS (
            INSERT INTO audit_records (seq, {content}, prev_hash, hash)
            SELECT c.seq, {", ".join(f"b.{name}" for name in _CONTENT)}, c.prev_hash, c.hash
            FROM batch b JOIN chain c ON c.n = b.n
        ),
        {sessions}
        moved AS (
            UPDATE audit_chain_head SET seq = last.seq, hash = last.hash
            FROM (SELECT seq, hash FROM chain ORDER BY n DESC LIMIT 1) AS last
            WHERE audit_chain_head.id = {_HEAD_ID}
        )
        SELECT seq, prev_hash, hash FROM chain WHERE n > 0 ORDER BY n
        """  # noqa: S608
    )
    return statement.bindparams(
        *(bindparam(name, type_=_array_of(columns[name].type)) for name in _CONTENT),
        *(bindparam(name, type_=ARRAY(Text(), dimensions=1)) for name in _TEXT_PARTS),
        *(bindparam(name, type_=ARRAY(LargeBinary(), dimensions=1)) for name in _PADS),
        *(
            bindparam(f"session_{name}", type_=_array_of(session_columns[name].type))
            for name in (GRANTED_SESSION_COLUMNS if with_sessions else ())
        ),
    )


_APPEND_CHAINED = _append_chained(with_sessions=False)
_APPEND_CHAINED_WITH_SESSIONS = _append_chained(with_sessions=True)


async def append_chained(
    connection: AsyncConnection,
    rows: Sequence[Mapping[str, Any]],
    texts: Sequence[HashedText],
    pads: Sequence[tuple[bytes, bytes] | None],
    sessions: Sequence[Mapping[str, Any]] = (),
) -> list[tuple[int, str, str]]:
    """PostgreSQL: chain `rows` (content columns only) after the head, store them and
    move the head, in one statement; (seq, prev_hash, hash) of each, in order. `pads`:
    each record's HMAC pads (None: an unkeyed link). `sessions`: granted sessions' rows
    (`GRANTED_SESSION_COLUMNS`), stored by the same statement.

    Atomic by itself: the writer runs it in autocommit, where its commit is the
    statement's; a change recorded with it runs it last in the change's transaction."""
    arrays: dict[str, list[Any]] = {name: [row[name] for row in rows] for name in _CONTENT}
    for part in _TEXT_PARTS:
        arrays[part] = [getattr(hashed, part) for hashed in texts]
    arrays["ipad"] = [pad[0] if pad else None for pad in pads]
    arrays["opad"] = [pad[1] if pad else None for pad in pads]
    statement = _APPEND_CHAINED
    if sessions:
        statement = _APPEND_CHAINED_WITH_SESSIONS
        for name in GRANTED_SESSION_COLUMNS:
            arrays[f"session_{name}"] = [session[name] for session in sessions]
    result = await connection.execute(statement, arrays)
    return [(int(seq), str(prev), str(hash_)) for seq, prev, hash_ in result]


async def lock_chain_head(connection: AsyncConnection) -> tuple[int, str]:
    """The chain head (sequence number and hash), locked until the transaction ends."""
    row = (await connection.execute(_LOCK_HEAD)).one()
    return int(row.seq), str(row.hash)


async def append_records(
    connection: AsyncConnection,
    rows: Sequence[dict[str, Any]],
    seq: int,
    hash_: str,
    sessions: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Insert chained `rows` (and granted `sessions`' rows) and move the locked head to
    (`seq`, `hash_`), the last of them.

    SQLite's way (`append_chained` is PostgreSQL's): it runs in-process, so the driver's
    executemany (one call for the batch) costs no round trips, and the one writer at a
    time holds the database's write lock anyway."""
    await connection.execute(_INSERT, list(rows))
    if sessions:
        await connection.execute(_INSERT_SESSIONS, list(sessions))
    await connection.execute(_MOVE_HEAD, {"head_seq": seq, "head_hash": hash_})


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


# Signed checkpoints of the chain head (lkps.audit.checkpoints).


async def add_checkpoint(session: AsyncSession, row: Mapping[str, Any]) -> None:
    await session.execute(insert(AuditCheckpointRow), [dict(row)])


async def latest_checkpoints(session: AsyncSession, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` checkpoints, newest first, as stored."""
    result = await session.execute(
        select(AuditCheckpointRow).order_by(AuditCheckpointRow.id.desc()).limit(limit)
    )
    return [{name: getattr(row, name) for name in _CHECKPOINT_COLUMNS} for row in result.scalars()]


_CHECKPOINT_COLUMNS = [
    column.key for column in AuditCheckpointRow.__table__.columns if column.key != "id"
]
