"""The grant's session rows, written in batches (group commit), off the session-start
path's CPU budget.

Each session start queues its row and waits until the batch holding it is committed, so
no token leaves before its session row is stored; concurrent starts share one
multi-row INSERT (one statement, one commit) instead of paying a statement each. A
failed batch fails every start in it (503, no token), as the audit writer does.
"""

from __future__ import annotations

import asyncio
import logging

from lkps.batches import commit_in_batches
from lkps.errors import ServiceUnavailable
from lkps.sessions.records import SessionGrant
from lkps.store import Database
from lkps.store import sessions as store
from lkps.store.engine import UNAVAILABLE_MESSAGE

log = logging.getLogger(__name__)

_Pending = tuple[SessionGrant, "asyncio.Future[None]"]


class LedgerUnavailable(ServiceUnavailable):
    def __init__(self, reason: str) -> None:
        super().__init__(UNAVAILABLE_MESSAGE, reason=f"session row not written: {reason}")


class SessionLedger:
    def __init__(self, db: Database, *, max_batch: int = 256) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._run(), name="lkps-session-ledger")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        self._queue.put_nowait(None)
        await writer

    async def add(self, grant: SessionGrant) -> None:
        """Returns once the row is committed; raises `ServiceUnavailable` otherwise."""
        if self._writer is None or self._writer.done():
            raise LedgerUnavailable("writer is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((grant, future))
        await future

    async def _run(self) -> None:
        await commit_in_batches(self._queue, self._commit, max_batch=self._max_batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            await store.insert_sessions(self._db, [grant for grant, _ in batch])
        except Exception as exc:
            # The writer lives on whatever happened: a dead writer would leave every
            # later session start waiting.
            if not isinstance(exc, ServiceUnavailable):
                log.exception("session rows batch of %d failed", len(batch))
            refusal = (
                exc
                if isinstance(exc, ServiceUnavailable)
                else LedgerUnavailable(type(exc).__name__)
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(refusal)
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)
