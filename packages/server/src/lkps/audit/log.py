"""The audit writer: durable, ordered, and fast enough for the session-start path.

Appends from concurrent requests are queued to one writer task per process, which
commits them in batches (group commit): one transaction locks the chain head, chains
and inserts every queued record, and moves the head. Each request waits for the commit
that holds its record, so nothing is answered before its record is durable, and a
failed commit fails every request in that batch with 503. A granted session's row rides
with its grant's record, in the same commit: the session-start path pays for one
commit, not two, and a session exists exactly when its grant is recorded.

A request that changes state (an override, a registration) records it with `change`
instead: the change and its record are committed in one transaction of their own, or
neither is. That transaction chains through the same function as the writer
(`chain_and_store`), locking the chain head after the change, so it queues with the writer's
batches on that lock and holds it only for the append and the commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from lkps.audit.chain import (
    ChainKey,
    ChainVerification,
    canonical_json,
    hashed_text,
    hmac_pads,
    record_hash,
    verify_chain,
)
from lkps.audit.keys import AuditKeys
from lkps.audit.records import (
    ENTRY_FIELDS,
    AuditEntry,
    AuditEvent,
    AuditFilter,
    AuditRecord,
    Outcome,
)
from lkps.audit.rejections import RejectionRate
from lkps.batches import commit_in_batches
from lkps.clock import Clock, SystemClock
from lkps.errors import ServiceUnavailable
from lkps.metrics import AUDIT_BATCH, AUDIT_FAILURES, AUDIT_RECORDS, AUDIT_WRITE
from lkps.store import Database, StoreUnavailable
from lkps.store import audit as queries
from lkps.store.engine import UNAVAILABLE_MESSAGE
from lkps.store.models import AUDIT_TEXT_LIMITS

log = logging.getLogger(__name__)
# Every written record's line, whoever wrote it: one logger operators can route.
records_log = logging.getLogger("lkps.audit")

# A granted session's row (`lkps.sessions.records.SessionGrant.row`), stored with its record.
SessionRowValues = Mapping[str, Any]
_Pending = tuple[AuditEntry, SessionRowValues | None, "asyncio.Future[AuditRecord]"]
T = TypeVar("T")
# A state change made on the session it is given; its result, and the entries that
# record it (filled in once it has run, so that they can say what it did).
Change = Callable[[AsyncSession], Awaitable[tuple[T, Sequence[AuditEntry]]]]

# A reason can quote what a caller sent (a token header's `alg`, say): bounded, so
# that no request can grow the trail or the log by more than this.
REASON_LIMIT = 300
_TEXT_LIMITS = {**AUDIT_TEXT_LIMITS, "reason": REASON_LIMIT}
_MARK = "…"


def bound(entry: AuditEntry) -> None:
    """Cut every text field to what the store keeps, marking the cut, before the entry
    is queued: one request's over-long value must never fail the batch it shares with
    others' records (it did: one 65-character forwarded address failed 113 others)."""
    for name, limit in _TEXT_LIMITS.items():
        value = getattr(entry, name, None)
        if isinstance(value, str) and len(value) > limit:
            setattr(entry, name, value[: limit - len(_MARK)] + _MARK)


# Called with each record once it is durable, on the writing request's task; an
# observer (a metric) must be cheap and must not raise.
RecordObserver = Callable[[AuditEntry], None]


class AuditUnavailable(ServiceUnavailable):
    def __init__(self, reason: str) -> None:
        super().__init__(UNAVAILABLE_MESSAGE, reason=f"audit write failed: {reason}")


class AuditLog:
    def __init__(
        self,
        db: Database,
        *,
        clock: Clock | None = None,
        observers: Iterable[RecordObserver] = (),
        rejections: RejectionRate | None = None,
        keys: AuditKeys | None = None,
        max_batch: int = 256,
        write_timeout: float = 10.0,
    ) -> None:
        """`keys`: the audit keys (`lkps.audit.keys.load_audit_keys`); None only where
        settings allow it (tools, tests): records are then chained unkeyed."""
        self._db = db
        self.keys = keys
        self.clock: Clock = clock or SystemClock()
        self._observers = (count_record, *observers)
        self.rejections = rejections or RejectionRate(self.clock)
        self._max_batch = max_batch
        self._write_timeout = write_timeout
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.batches_written = 0

    @property
    def running(self) -> bool:
        return self._writer is not None and not self._writer.done()

    async def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._run(), name="lkps-audit-writer")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        self._queue.put_nowait(None)
        try:
            await writer
        except Exception:  # stopping goes on: the rest of the shutdown must still run
            log.exception("the audit writer had failed")

    async def append(
        self, entry: AuditEntry, *, session: SessionRowValues | None = None
    ) -> AuditRecord:
        """Returns once the record (and the granted `session`'s row, if any) is
        committed, logged and counted; raises `AuditUnavailable` otherwise, and then
        neither was stored."""
        try:
            if not self.running:
                raise AuditUnavailable("writer is not running")
            bound(entry)
            future: asyncio.Future[AuditRecord] = asyncio.get_running_loop().create_future()
            self._queue.put_nowait((entry, session, future))
            record = await future
        except AuditUnavailable as failure:
            _refused(entry, failure)
            raise
        self._written(entry, record)
        return record

    async def change(self, change: Change[T]) -> tuple[T, list[AuditRecord]]:
        """Make `change` and append the records it returns in one transaction: both are
        committed, or neither is, and `AuditUnavailable` is raised when the records could
        not be (the change is then undone by the store, not by LKPS).

        A failure of the change itself is raised as it came (no record claims it). The
        chain head is locked after the change, by the same chaining as the writer's
        batches, so the two serialise on that lock and it is held for the append and
        the commit only. Run again, once, on a dead connection: `change` must be
        repeatable (the first attempt committed nothing).
        """
        if not self.running:  # stopped, the log writes nothing, by either way
            raise AuditUnavailable("writer is not running")
        entries: Sequence[AuditEntry] = ()

        async def change_and_record(session: AsyncSession) -> tuple[T, list[AuditRecord]]:
            nonlocal entries
            entries = ()
            result, changed = await change(session)
            await session.flush()
            entries = changed  # from here on, a failure is the records'
            for entry in entries:
                bound(entry)
            records = await chain_and_store(await session.connection(), list(entries), self.key)
            return result, records

        try:
            result, records = await self._db.run_in_session(change_and_record)
        except (StoreUnavailable, AuditUnavailable) as failure:
            if not entries:
                raise
            AUDIT_FAILURES.inc()
            refusal = (
                failure
                if isinstance(failure, AuditUnavailable)
                else AuditUnavailable(type(failure.__cause__ or failure).__name__)
            )
            for entry in entries:
                _refused(entry, refusal)
            raise refusal from failure
        for entry, record in zip(entries, records, strict=True):
            self._written(entry, record)
        return result, records

    def _written(self, entry: AuditEntry, record: AuditRecord) -> None:
        """Count and log a record that is durable."""
        for observe in self._observers:
            observe(entry)
        level = logging.WARNING if entry.outcome == Outcome.DENIED else logging.INFO
        records_log.log(
            level,
            "%s %s",
            entry.event,
            entry.outcome,
            extra={**entry.log_fields(), "audit_seq": record.seq},
        )

    def event_entry(
        self,
        event: AuditEvent,
        *,
        reason: str,
        agent_id: str | None = None,
        registration_id: str | None = None,
    ) -> AuditEntry:
        """The entry of something LKPS did on its own behalf (no request, no caller),
        such as ending a lapsed registration, for `change` to record with it."""
        return AuditEntry(
            event=event,
            outcome=Outcome.RECORDED,
            status=0,
            occurred_at=self.clock.now(),
            record_id=str(uuid.uuid4()),
            reason=reason,
            agent_id=agent_id,
            registration_id=registration_id,
        )

    async def _run(self) -> None:
        await commit_in_batches(self._queue, self._commit, max_batch=self._max_batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        failure = await self._try_commit(batch)
        if failure is None:
            return
        if len(batch) > 1 and isinstance(failure, StoreUnavailable) and failure.refused_the_data:
            # Not the store being away but something in one record: that record's
            # request alone must fail, so each goes on its own (the refused statement
            # stored nothing).
            for pending in batch:
                await self._commit([pending])
            return
        AUDIT_FAILURES.inc()
        refusal = (
            failure
            if isinstance(failure, AuditUnavailable)
            else AuditUnavailable(type(failure).__name__)
        )
        for _, _, future in batch:
            if not future.done():
                future.set_exception(refusal)

    async def _try_commit(self, batch: list[_Pending]) -> Exception | None:
        """Commit `batch` and answer its requests; or the failure, answering none."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._write_timeout):
                records = await self._write(
                    [entry for entry, _, _ in batch],
                    [session for _, session, _ in batch if session is not None],
                )
            for (_, _, future), record in zip(batch, records, strict=True):
                if not future.done():
                    future.set_result(record)
        except Exception as exc:
            # Whatever went wrong, the batch fails closed (503) and the writer lives on:
            # a writer that died would leave every later request waiting.
            if not isinstance(exc, StoreUnavailable | AuditUnavailable | TimeoutError):
                log.exception("audit batch of %d failed", len(batch))
            return exc
        self.batches_written += 1
        AUDIT_WRITE.observe(time.perf_counter() - started)
        AUDIT_BATCH.observe(len(batch))
        return None

    @property
    def key(self) -> ChainKey | None:
        """The key new records are chained with."""
        return self.keys.current if self.keys else None

    async def _write(
        self, entries: list[AuditEntry], sessions: Sequence[SessionRowValues] = ()
    ) -> list[AuditRecord]:
        key = self.key

        async def work(connection: AsyncConnection) -> list[AuditRecord]:
            return await chain_and_store(connection, entries, key, sessions)

        if self._db.dialect == "postgresql":
            # One statement in autocommit: the head stays locked for PostgreSQL's own
            # work only. Locked across round trips, it was held for as long as this
            # process took to come back to each one, under load ~10 ms, while every
            # other process's writer waited (see bench/RESULTS.md).
            return await self._db.statement(work)
        return await self._db.transaction(work)

    # Reading, for operators.

    async def records(
        self, *, after: int = 0, up_to: int | None = None, page_size: int = 1000
    ) -> AsyncIterator[AuditRecord]:
        while True:
            page = await self._db.run_in_session(
                partial(queries.records_after, after_seq=after, limit=page_size, up_to=up_to)
            )
            if not page:
                return
            for record in page:
                yield record
            after = page[-1].seq

    # Reads go through `run_in_session`: run again, once, on a pooled connection that a
    # restarted server ended (in CI, a test's own check of the trail met one).

    async def latest(self, limit: int) -> list[AuditRecord]:
        return await self._db.run_in_session(lambda session: queries.latest_records(session, limit))

    async def query(
        self, where: AuditFilter, *, limit: int, before_seq: int | None = None
    ) -> list[AuditRecord]:
        return await self._db.run_in_session(
            lambda session: queries.query_records(
                session, where, limit=limit, before_seq=before_seq
            )
        )

    async def head(self) -> tuple[int, str]:
        """The chain head: its sequence number and hash."""
        return await self._db.run_in_session(queries.read_chain_head)

    async def store_checkpoint(self, row: dict[str, Any]) -> None:
        async with self._db.session() as session:
            await queries.add_checkpoint(session, row)

    async def checkpoints(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` stored checkpoints, newest first, as stored."""
        return await self._db.run_in_session(
            lambda session: queries.latest_checkpoints(session, limit)
        )

    async def verify(
        self, *, legacy_until: int = 0, checkpoints: dict[int, str] | None = None
    ) -> ChainVerification:
        """Verify the chain with this log's keys (see `verify_chain`)."""
        head_seq, head_hash = await self.head()
        # Records appended while we read lie beyond the head we saw; leave them out.
        return await verify_chain(
            self.records(up_to=head_seq),
            head_seq,
            head_hash,
            keys=self.keys.by_id() if self.keys else None,
            legacy_until=legacy_until,
            checkpoints=checkpoints,
        )


# Label children by label values (bounded: events and outcomes): `.labels()` validates
# and locks on every call.
_record_counters: dict[tuple[str, str], Any] = {}


def count_record(entry: AuditEntry) -> None:
    key = (str(entry.event), str(entry.outcome))
    counter = _record_counters.get(key)
    if counter is None:
        counter = _record_counters[key] = AUDIT_RECORDS.labels(*key)
    counter.inc()


async def chain_and_store(
    connection: AsyncConnection,
    entries: list[AuditEntry],
    key: ChainKey | None,
    sessions: Sequence[SessionRowValues] = (),
) -> list[AuditRecord]:
    """THE chaining: lock the chain head, chain `entries` after it under `key` (None:
    unkeyed), store them (and the granted `sessions`' rows) and move the head, on
    `connection`. Every writer of records comes through here, whichever engine and
    whatever transaction it runs in: in its own (the group-commit writer) or in one
    that also holds a state change."""
    if not entries:
        return []
    if connection.dialect.name == "postgresql":
        return await _chain_in_store(connection, entries, key, sessions)
    return await _chain(connection, entries, key, sessions)


def _row(entry: AuditEntry, key: ChainKey | None) -> dict[str, Any]:
    # A shallow copy: `dataclasses.asdict` deep-copies, which cost more than the insert
    # itself, and the one mutable field (`details`) is replaced just below.
    row = {name: getattr(entry, name) for name in ENTRY_FIELDS}
    row["event"] = str(entry.event)
    row["outcome"] = str(entry.outcome)
    row["details"] = canonical_json(entry.details) if entry.details else None
    row["key_id"] = key.key_id if key else None
    return row


def _refused(entry: AuditEntry, failure: AuditUnavailable) -> None:
    records_log.error(
        "audit record not written; refusing %s",
        entry.event,
        extra={"audit_event": str(entry.event), "reason": failure.reason},
    )


async def _chain(
    connection: AsyncConnection,
    entries: list[AuditEntry],
    key: ChainKey | None,
    sessions: Sequence[SessionRowValues],
) -> list[AuditRecord]:
    """SQLite: lock the chain head, chain `entries` after it, store them and move the
    head, in the caller's transaction. Sequence numbers and hashes are computed here,
    under the lock, so a retry on a fresh connection chains from the head as it is then."""
    seq, previous = await queries.lock_chain_head(connection)
    rows: list[dict[str, Any]] = []
    for entry in entries:
        seq += 1
        row = _row(entry, key)
        row["seq"] = seq
        row["prev_hash"] = previous
        row["hash"] = previous = record_hash(row, key)
        rows.append(row)
    await queries.append_records(connection, rows, seq, previous, sessions)
    return [AuditRecord(**row) for row in rows]


async def _chain_in_store(
    connection: AsyncConnection,
    entries: list[AuditEntry],
    key: ChainKey | None,
    sessions: Sequence[SessionRowValues],
) -> list[AuditRecord]:
    """PostgreSQL: have the store chain `entries` after its head, under its own lock,
    from each record's own HMAC key (never the audit key), and check each hash it
    computed against this process's: a store that hashed other bytes (an encoding
    conversion) would otherwise show up only when the chain is verified."""
    rows = [_row(entry, key) for entry in entries]
    texts = [hashed_text(row) for row in rows]
    record_keys = [key.record_key(row["record_id"]) if key else None for row in rows]
    pads = [hmac_pads(record_key) if record_key else None for record_key in record_keys]
    links = await queries.append_chained(connection, rows, texts, pads, sessions)
    records: list[AuditRecord] = []
    for row, hashed, record_key, (seq, previous, hash_) in zip(
        rows, texts, record_keys, links, strict=True
    ):
        if hashed.hash(previous, seq, record_key) != hash_:
            log.critical("the store hashed audit record %s differently", seq)
            raise AuditUnavailable("store computed a different hash")
        records.append(AuditRecord(**row, seq=seq, prev_hash=previous, hash=hash_))
    return records
