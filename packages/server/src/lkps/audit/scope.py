"""Audit an attempt, whatever its outcome, before its response leaves.

    async with AuditScope(log, clock, AuditEvent.SESSION_START, context,
                          failure_message="Session creation failed") as audit:
        caller = await authenticate(...)
        audit.record_caller(caller)
        ...
        audit.grant(room_name=...)

Leaving the block normally appends a `granted` record; leaving it with an `LKPSError`
appends a `denied` record with that error's status and reason and lets the error
through; any other exception is recorded as a 500 and replaced by an `InternalError`
carrying `failure_message`, so no internal text reaches the caller. If the record
cannot be written the caller gets 503 instead, whatever the outcome was.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from prometheus_client import Counter

from lkps.audit.log import AuditLog, AuditUnavailable
from lkps.audit.records import AuditEntry, AuditEvent, AuditRecord, Outcome
from lkps.clock import Clock
from lkps.errors import InternalError, LKPSError
from lkps.identity.caller import Caller
from lkps.metrics import AUDIT_RECORDS, SESSION_STARTS

log = logging.getLogger("lkps.audit")


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str | None
    client_ip: str | None


# Statuses after which a session start's agent is one LKPS knows (registered).
_KNOWN_AGENT_STATUSES = frozenset({200, 201, 403})


# Label children by label values (bounded: events, outcomes, statuses, known agents):
# `.labels()` validates and locks on every call.
_records: dict[tuple[str, str], Counter] = {}
_session_starts: dict[tuple[str, int, str], Counter] = {}


def count(entry: AuditEntry) -> None:
    event, outcome = str(entry.event), str(entry.outcome)
    records = _records.get((event, outcome))
    if records is None:
        records = _records[event, outcome] = AUDIT_RECORDS.labels(event, outcome)
    records.inc()
    if entry.event == AuditEvent.SESSION_START:
        agent = entry.agent_id if entry.status in _KNOWN_AGENT_STATUSES and entry.agent_id else "-"
        key = (outcome, entry.status, agent)
        starts = _session_starts.get(key)
        if starts is None:
            starts = _session_starts[key] = SESSION_STARTS.labels(outcome, str(entry.status), agent)
        starts.inc()


class AuditScope:
    def __init__(
        self,
        audit_log: AuditLog,
        clock: Clock,
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
        self.entry = AuditEntry(
            event=event,
            outcome=Outcome.GRANTED,
            status=granted_status,
            occurred_at=clock.now(),
            record_id=str(uuid.uuid4()),
            request_id=context.request_id,
            client_ip=context.client_ip,
        )
        self.record: AuditRecord | None = None

    def record_caller(self, caller: Caller) -> None:
        self.entry.actor_tenant_id = caller.tenant_id
        self.entry.actor_object_id = caller.object_id
        self.entry.actor_cwid = caller.cwid
        self.entry.client_app_id = caller.client_app_id

    def set(self, **fields: Any) -> None:
        """Fill record columns (agent_id, room_name, registration_id, ...)."""
        for name, value in fields.items():
            if not hasattr(self.entry, name) or name in {"details", "outcome", "status"}:
                raise AttributeError(f"audit entries have no settable field {name!r}")
            setattr(self.entry, name, value)

    def detail(self, **details: Any) -> None:
        self.entry.details.update(details)

    def grant(self, *, event: AuditEvent | None = None, reason: str | None = None) -> None:
        if event is not None:
            self.entry.event = event
        self._reason = reason

    async def __aenter__(self) -> AuditScope:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            self._finish(Outcome.GRANTED, self._status, self._reason)
            await self._append()
            return False
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

    async def _append(self, cause: BaseException | None = None) -> None:
        try:
            self.record = await self._log.append(self.entry)
        except AuditUnavailable as failure:
            log.error(
                "audit record not written; refusing %s",
                self.entry.event,
                extra={"audit_event": str(self.entry.event), "reason": failure.reason},
            )
            raise failure from cause
        count(self.entry)
        level = logging.INFO if self.entry.outcome != Outcome.DENIED else logging.WARNING
        log.log(
            level,
            "%s %s",
            self.entry.event,
            self.entry.outcome,
            extra={
                "audit_event": str(self.entry.event),
                "outcome": str(self.entry.outcome),
                "status": self.entry.status,
                "reason": self.entry.reason,
                "agent_id": self.entry.agent_id,
                "client_app_id": self.entry.client_app_id,
                "cwid": self.entry.actor_cwid,
                "room_name": self.entry.room_name,
                "audit_seq": self.record.seq,
            },
        )
