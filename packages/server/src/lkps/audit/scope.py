"""Audit an attempt, whatever its outcome, before its response leaves.

    async with AuditScope(log, AuditEvent.SESSION_START, context,
                          failure_message="Session creation failed") as audit:
        caller = await identity.authenticate(...)
        audit.record_caller(caller)
        ...
        audit.grant(reason=...)

Leaving the block normally appends a `granted` record; leaving it with an `LKPSError`
appends a `denied` record with that error's status and reason and lets the error
through; any other exception is recorded as a 500 and replaced by an `InternalError`
carrying `failure_message`, so no internal text reaches the caller. If the record
cannot be written the caller gets 503 instead, whatever the outcome was.

An attempt that changes state makes the change through `commit`, as its last step: the
change and its `granted` record are committed in one transaction, or neither is (then
the attempt is recorded as denied, with the failure's status, when the trail can be
written at all). A session start's one change, its session row, rides with the granted
record in the audit writer's batch instead (`open_session`): the hot path's one commit.

The use cases fill the record as they go (`set_agent`, `set_room`, ...), each field
before the step that could fail, so a denial is attributed as far as it got.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from lkps.audit.log import AuditLog, AuditUnavailable, SessionRowValues
from lkps.audit.records import AuditEntry, AuditEvent, AuditRecord, Outcome
from lkps.errors import InternalError, LKPSError, Unauthenticated
from lkps.identity.caller import Caller

log = logging.getLogger("lkps.audit")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str | None
    client_ip: str | None


class AuditScope:
    def __init__(
        self,
        audit_log: AuditLog,
        event: AuditEvent,
        context: RequestContext,
        *,
        failure_message: str = "Internal server error",
        granted_status: int = 200,
    ) -> None:
        self._log = audit_log
        self._failure_message = failure_message
        self._status = granted_status
        self._reason: str | None = None
        self._session: SessionRowValues | None = None
        self.entry = AuditEntry(
            event=event,
            outcome=Outcome.GRANTED,
            status=granted_status,
            occurred_at=audit_log.clock.now(),
            record_id=str(uuid.uuid4()),
            request_id=context.request_id,
            client_ip=context.client_ip,
        )
        self.record: AuditRecord | None = None

    # Filling the record.

    def record_caller(self, caller: Caller) -> None:
        self.entry.actor_tenant_id = caller.tenant_id
        self.entry.actor_object_id = caller.object_id
        self.entry.actor_cwid = caller.cwid
        self.entry.client_app_id = caller.client_app_id

    def set_agent(self, agent_id: str) -> None:
        self.entry.agent_id = agent_id

    def set_room(self, room_name: str) -> None:
        self.entry.room_name = room_name

    def set_registration(self, registration_id: str | None) -> None:
        self.entry.registration_id = registration_id

    def detail(self, **details: Any) -> None:
        self.entry.details.update(details)

    def grant(self, *, event: AuditEvent | None = None, reason: str | None = None) -> None:
        if event is not None:
            self.entry.event = event
        self._reason = reason

    async def commit(self, change: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Make `change` (on the session it is given) and write this attempt's
        `granted` record, in one transaction: `change`'s result once both are
        committed; `AuditUnavailable` (503) when the record could not be, and then the
        change was not made either.

        The last step of an attempt: `change` fills the record as it goes (`detail`,
        `grant`, ...), and may run twice (once more on a dead connection), each time
        from the record as it was before. Whatever fails, the record is left as it was
        before, to say that the attempt was denied and why.
        """
        assert self.record is None, "one attempt, one record"
        before, reason = _copy(self.entry), self._reason

        async def change_and_grant(session: AsyncSession) -> tuple[T, Sequence[AuditEntry]]:
            self.entry, self._reason = _copy(before), reason
            result = await change(session)
            self._finish(Outcome.GRANTED, self._status, self._reason)
            return result, [self.entry]

        try:
            result, (self.record,) = await self._log.change(change_and_grant)
        except BaseException:
            self.entry, self._reason = before, reason
            raise
        return result

    def open_session(self, session: SessionRowValues) -> None:
        """Store a granted session's row (`SessionGrant.row`) with this attempt's
        `granted` record, in the same commit of the audit writer's batch: the session
        exists exactly when its grant is recorded, and a denial stores none."""
        self._session = session

    # The block.

    async def __aenter__(self) -> AuditScope:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self.record is not None:
            # Committed with its change (`commit`): nothing may follow it that fails.
            if exc is not None:
                log.error("failure after %s was recorded", self.entry.event, exc_info=exc)
                if isinstance(exc, Exception) and not isinstance(exc, LKPSError):
                    raise InternalError(self._failure_message) from exc
            return False
        if exc is None:
            self._finish(Outcome.GRANTED, self._status, self._reason)
            await self._append(session=self._session)
            return False
        if isinstance(exc, Unauthenticated):
            unrecorded = self._log.rejections.admit(self.entry.client_ip, exc.kind)
            if unrecorded is None:
                return False  # within its pair's window: counted, not recorded
            if unrecorded:
                self.detail(unrecorded_since_last=unrecorded)
        if isinstance(exc, LKPSError):
            self._finish(Outcome.DENIED, exc.status_code, exc.reason)
            await self._append(cause=exc)
            return False
        if isinstance(exc, Exception):
            log.error("unexpected failure during %s", self.entry.event, exc_info=exc)
            self._finish(Outcome.DENIED, 500, f"unexpected {type(exc).__name__}")
            await self._append(cause=exc)
            raise InternalError(self._failure_message) from exc
        return False  # cancellation and the like: nothing was decided

    def _finish(self, outcome: Outcome, status: int, reason: str | None) -> None:
        self.entry.outcome = outcome
        self.entry.status = status
        self.entry.reason = reason

    async def _append(
        self, cause: BaseException | None = None, session: SessionRowValues | None = None
    ) -> None:
        try:
            self.record = await self._log.append(self.entry, session=session)
        except AuditUnavailable as failure:
            raise failure from cause


def _copy(entry: AuditEntry) -> AuditEntry:
    return replace(entry, details=dict(entry.details))
