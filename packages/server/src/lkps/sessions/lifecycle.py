"""A granted session followed to its end, from LiveKit's webhooks.

Each step (client joined, agent joined, ended, reopened) is a conditional UPDATE in
the store (`lkps.store.sessions`): the replica whose statement changed the row writes
the step's audit record, so events that repeat, arrive late or reach several replicas
are recorded once. A step and its record are committed in one transaction
(`AuditLog.change`): when the record cannot be written the step is not applied either,
and the webhook is answered 503, so that LiveKit's retry applies it with its record.

Steps are group-committed, as the audit writer commits records (`lkps.batches`): the
events that arrived while the previous batch was being committed are applied in one
transaction, with one append of their records and one commit, instead of a statement,
a commit and a wait for the audit writer each; on PostgreSQL, the batch's steps of one
kind are one statement for all their rows (the rows locked first, in room order; a room
that comes twice goes in successive statements: `lkps.store.sessions.apply_steps`).
Each webhook is answered once its batch is committed. A batch the store refused is
committed again one event at a time, so that one event's fault fails that event's
webhook alone.

No-shows are found by a background job scanning the store (not a timer in one process:
the client's join may reach any replica, and that replica may stop): a session whose
client joined `agent_join_timeout` ago without an agent is claimed by one UPDATE, so
one replica alone records `session.agent_missing` (in the claim's transaction) and asks
LiveKit, once, to dispatch the agent again with the same metadata.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from livekit.protocol.models import ParticipantInfo
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from lkps.audit import AuditEntry, AuditEvent, AuditLog, Outcome
from lkps.audit.log import AuditUnavailable
from lkps.batches import commit_in_batches
from lkps.clock import Clock
from lkps.errors import ServiceUnavailable
from lkps.livekit.dispatch import AgentDispatcher
from lkps.livekit.webhooks import FOLLOWED, WebhookFacts
from lkps.metrics import (
    SESSION_AGENT_JOIN,
    SESSION_NO_SHOWS,
    SESSION_REDISPATCH_JOINED,
    SESSION_REDISPATCHES,
    SESSIONS_ENDED,
)
from lkps.sessions.records import SessionFacts
from lkps.store import Database
from lkps.store import sessions as store
from lkps.store.sessions import SessionStep, StepKind

log = logging.getLogger(__name__)

# livekit-server names an agent's participant after its job: `agent-AJ_...`.
_JOB_IN_IDENTITY = re.compile(r"agent-(AJ_[A-Za-z0-9]+)")
_SCAN_LIMIT = 100
# The participants a session follows: its client, and its agent.
_PARTICIPANTS = frozenset({ParticipantInfo.Kind.STANDARD, ParticipantInfo.Kind.AGENT})


class SessionLifecycle:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        dispatcher: AgentDispatcher,
        clock: Clock,
        *,
        agent_join_timeout: float,
        max_batch: int = 128,
    ) -> None:
        self._db = db
        self._audit = audit
        self._dispatcher = dispatcher
        self._clock = clock
        self._timeout = timedelta(seconds=agent_join_timeout)
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    # Reading.

    async def find(self, session_id: str) -> SessionFacts | None:
        return await store.find_session(self._db, session_id)

    async def search(
        self, *, agent_id: str | None, since: datetime | None, state: str | None, limit: int
    ) -> list[SessionFacts]:
        return await store.list_sessions(
            self._db, agent_id=agent_id, since=since, state=state, limit=limit
        )

    # Webhooks.

    async def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._run(), name="lkps-session-steps")

    async def stop(self) -> None:
        """Commit the steps queued, then stop."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        self._queue.put_nowait(None)
        await writer

    async def apply(self, event: WebhookFacts) -> bool:
        """Apply one verified event; whether it changed a session. Raises
        `ServiceUnavailable` (503) when the step and its record could not be committed
        (neither is, then)."""
        step = _step_of(event, self._clock.now())
        if step is None:
            return False
        if self._writer is None or self._writer.done():
            raise AuditUnavailable("session step writer is not running")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((step, future))
        return await future

    async def _run(self) -> None:
        await commit_in_batches(self._queue, self._commit, max_batch=self._max_batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        """Commit `batch`'s steps with their records and answer each webhook. Never
        raises: a writer that died would leave every later webhook waiting."""
        # Applied and recorded in room order, whatever the events' order; one room's
        # steps keep the order they came in (a stable sort). The store locks their rows
        # in room order, so that two replicas' batches never wait for each other's rows.
        batch = sorted(batch, key=lambda pending: pending[0].room)
        try:
            applied = await self._write([step for step, _ in batch])
        except Exception as failure:
            if len(batch) > 1 and _store_refused(failure):
                # The store answered and refused something, maybe one event's step or
                # record: each event on its own, so that only that one fails (the
                # refused transaction committed nothing).
                for pending in batch:
                    await self._commit([pending])
                return
            if not isinstance(failure, ServiceUnavailable):
                log.exception("session steps batch of %d failed", len(batch))
            refusal = (
                failure
                if isinstance(failure, ServiceUnavailable)
                else AuditUnavailable(type(failure).__name__)
            )
            for _, future in batch:
                if not future.done():
                    future.set_exception(refusal)
            return
        for (_, future), done in zip(batch, applied, strict=True):
            if done is not None:
                _observe(done)
            if not future.done():
                future.set_result(done is not None)

    async def _write(self, steps: list[SessionStep]) -> list[_Applied | None]:
        """Apply `steps` in order, and store the records of those that changed a
        session, in one transaction."""

        async def change(
            session: AsyncSession,
        ) -> tuple[list[_Applied | None], list[AuditEntry]]:
            changed = await store.apply_steps(await session.connection(), steps)
            applied = [_applied(step, facts) for step, facts in zip(steps, changed, strict=True)]
            entries = [
                self._entry(done.event, done.facts, details=done.details)
                for done in applied
                if done is not None
            ]
            return applied, entries

        applied, _ = await self._audit.change(change)
        return applied

    # No-shows.

    async def check_no_shows(self) -> int:
        """One scan: claim, record and re-dispatch every no-show due; how many."""
        now = self._clock.now()
        due = now - self._timeout
        timeout = self._timeout.total_seconds()

        def missing(claimed: list[SessionFacts], *, after_redispatch: bool) -> list[AuditEntry]:
            details = {"timeout_seconds": timeout, "after_redispatch": after_redispatch}
            return [
                self._entry(AuditEvent.SESSION_AGENT_MISSING, facts, details=details)
                for facts in claimed
            ]

        async def claim(session: AsyncSession) -> tuple[list[SessionFacts], list[AuditEntry]]:
            connection = await session.connection()
            claimed = await store.claim_no_shows(
                connection, joined_before=due, now=now, limit=_SCAN_LIMIT
            )
            return claimed, missing(claimed, after_redispatch=False)

        async def claim_again(
            session: AsyncSession,
        ) -> tuple[list[SessionFacts], list[AuditEntry]]:
            # The one retry did not bring the agent either: recorded, not retried again.
            connection = await session.connection()
            claimed = await store.claim_retry_no_shows(
                connection, missing_before=due, limit=_SCAN_LIMIT
            )
            return claimed, missing(claimed, after_redispatch=True)

        first, _ = await self._audit.change(claim)
        for facts in first:
            SESSION_NO_SHOWS.inc()
            await self._redispatch(facts)
        again, _ = await self._audit.change(claim_again)
        return len(first) + len(again)

    async def _redispatch(self, facts: SessionFacts) -> None:
        if (job_id := await self._job_under_way(facts)) is not None:
            # A worker holds the agent's job and has not finished it: the agent is slow
            # to join, not lost. A second job would put two agents in the user's room.
            SESSION_REDISPATCHES.labels("job_under_way").inc()
            await self._audit.append(
                self._entry(
                    AuditEvent.SESSION_REDISPATCHED,
                    facts,
                    reason=f"not dispatched again: the agent's job {job_id} is under way",
                    details={"dispatched": False, "job_id": job_id},
                )
            )
            return
        try:
            dispatch_id = await self._dispatcher.dispatch(
                agent_name=facts.agent_id, room=facts.room_name, metadata=facts.dispatch_metadata
            )
        except Exception as exc:  # LiveKit away or refusing: recorded, not retried
            log.warning(
                "re-dispatch failed",
                extra={"room_name": facts.room_name, "error": type(exc).__name__},
            )
            SESSION_REDISPATCHES.labels("failed").inc()
            await self._audit.append(
                self._entry(
                    AuditEvent.SESSION_REDISPATCHED,
                    facts,
                    outcome=Outcome.DENIED,
                    reason=f"dispatch failed: {type(exc).__name__}",
                    details={"dispatched": False},
                )
            )
            return
        SESSION_REDISPATCHES.labels("dispatched").inc()
        entry = self._entry(
            AuditEvent.SESSION_REDISPATCHED,
            facts,
            details={"dispatched": True, "dispatch_id": dispatch_id},
        )

        async def note(session: AsyncSession) -> tuple[None, list[AuditEntry]]:
            await store.note_redispatch(await session.connection(), facts.session_id, dispatch_id)
            return None, [entry]

        await self._audit.change(note)

    async def _job_under_way(self, facts: SessionFacts) -> str | None:
        """A job of the session's agent that a worker holds in its room; None when there
        is none or LiveKit cannot say (then the re-dispatch goes ahead, as before)."""
        try:
            return await self._dispatcher.running_job(
                agent_name=facts.agent_id, room=facts.room_name
            )
        except Exception as exc:
            log.warning(
                "could not list the room's dispatches",
                extra={"room_name": facts.room_name, "error": type(exc).__name__},
            )
            return None

    # Records.

    def _entry(
        self,
        event: AuditEvent,
        facts: SessionFacts,
        *,
        details: dict[str, Any],
        outcome: Outcome = Outcome.RECORDED,
        reason: str | None = None,
    ) -> AuditEntry:
        """A step's audit record, linked to the session by its room name and id (and to
        the user and client app who started it)."""
        return AuditEntry(
            event=event,
            outcome=outcome,
            status=0,
            occurred_at=self._clock.now(),
            record_id=str(uuid.uuid4()),
            reason=reason,
            actor_tenant_id=facts.actor_tenant_id,
            actor_object_id=facts.actor_object_id,
            actor_cwid=facts.actor_cwid,
            client_app_id=facts.client_app_id,
            agent_id=facts.agent_id,
            room_name=facts.room_name,
            details={"session_id": facts.session_id, "room_sid": facts.room_sid, **details},
        )


@dataclass(frozen=True, slots=True)
class _Applied:
    """A step that changed its session, and what its record says."""

    event: AuditEvent
    facts: SessionFacts
    details: dict[str, Any]


_Pending = tuple[SessionStep, "asyncio.Future[bool]"]


def _step_of(event: WebhookFacts, now: datetime) -> SessionStep | None:
    """The step an event may make; None for one that moves no session: an event LKPS
    does not follow, a room without a name (or a start without its id), a participant
    that is neither a client nor an agent (egress, ingress, SIP)."""
    if event.event not in FOLLOWED or not event.room_name:
        return None
    if event.event == "room_started" and not event.room_sid:
        return None
    if event.event == "participant_joined" and event.kind not in _PARTICIPANTS:
        return None
    job_id = None
    if event.event == "room_started":
        kind = StepKind.ROOM_STARTED
    elif event.event == "room_finished":
        kind = StepKind.ENDED
    elif event.agent:
        kind = StepKind.AGENT_JOINED
        match = _JOB_IN_IDENTITY.fullmatch(event.identity)
        job_id = match.group(1) if match else None
    else:
        kind = StepKind.CLIENT_JOINED
    return SessionStep(
        kind=kind,
        room=event.room_name,
        room_sid=event.room_sid or None,
        now=now,
        identity=event.identity,
        sid=event.participant_sid,
        job=job_id,
    )


def _applied(step: SessionStep, facts: SessionFacts | None) -> _Applied | None:
    """What `step` changed (`facts`, the row after it; None: nothing, as it was applied
    before or its room is not one LKPS granted), and what its record says."""
    if facts is None:
        return None
    details: dict[str, Any]
    if step.kind == StepKind.ROOM_STARTED:
        details = {"room_sid": step.room_sid, "original_room_sid": facts.room_sid}
        return _Applied(AuditEvent.SESSION_REOPENED, facts, details)
    if step.kind == StepKind.ENDED:
        details = {
            "final_state": facts.final_state,
            "duration_seconds": facts.duration_seconds,
            "agent_joined": facts.agent_joined_at is not None,
            "redispatched": facts.no_show_stage > 0,
        }
        return _Applied(AuditEvent.SESSION_ENDED, facts, details)
    if step.kind == StepKind.AGENT_JOINED:
        details = {
            "participant_identity": step.identity,
            "participant_sid": step.sid,
            "job_id": step.job,
            "after_redispatch": facts.no_show_stage > 0,
            "seconds_since_grant": facts.grant_to_agent_seconds,
        }
        return _Applied(AuditEvent.SESSION_AGENT_JOINED, facts, details)
    details = {"participant_identity": step.identity, "participant_sid": step.sid}
    return _Applied(AuditEvent.SESSION_CLIENT_JOINED, facts, details)


def _observe(done: _Applied) -> None:
    """The metrics of a committed step."""
    if done.event == AuditEvent.SESSION_AGENT_JOINED:
        if (seconds := done.facts.grant_to_agent_seconds) is not None:
            SESSION_AGENT_JOIN.observe(seconds)
        if done.facts.no_show_stage > 0:
            SESSION_REDISPATCH_JOINED.inc()
    elif done.event == AuditEvent.SESSION_ENDED:
        SESSIONS_ENDED.labels(done.facts.final_state or "granted").inc()


# SQLSTATE classes of a store that is away or overwhelmed, not refusing one statement's
# data: connection exceptions, insufficient resources, operator intervention (a
# statement timeout among them), system errors.
_STORE_AWAY = frozenset({"08", "53", "57", "58"})


def _store_refused(failure: BaseException) -> bool:
    """The store answered and refused a statement (a constraint, a trigger, a value it
    cannot take), rather than being away or busy (a lost connection, SQLite's lock, a
    timeout): then a batch's events are worth trying one at a time, and only then, since
    each try would wait for a store that is away. Looked for along the failure's causes
    (`AuditLog.change` wraps it)."""
    seen: BaseException | None = failure
    while seen is not None:
        if isinstance(seen, DBAPIError):
            state = str(getattr(seen.orig, "sqlstate", "") or "")
            return not (
                seen.connection_invalidated
                or isinstance(seen, OperationalError)
                or state[:2] in _STORE_AWAY
            )
        seen = seen.__cause__
    return False
