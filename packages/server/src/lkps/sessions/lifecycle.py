"""A granted session followed to its end, from LiveKit's webhooks.

Each step (client joined, agent joined, ended, reopened) is one conditional UPDATE in
the store (`lkps.store.sessions`): the replica whose statement changed the row writes
the step's audit record, so events that repeat, arrive late or reach several replicas
are recorded once. When the record cannot be written the step is put back and the
webhook answered 503, so that LiveKit's retry applies it again with its record.

No-shows are found by a background job scanning the store (not a timer in one process:
the client's join may reach any replica, and that replica may stop): a session whose
client joined `agent_join_timeout` ago without an agent is claimed by one UPDATE, so
one replica alone records `session.agent_missing` and asks LiveKit, once, to dispatch
the agent again with the same metadata.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from livekit.protocol.models import ParticipantInfo
from livekit.protocol.webhook import WebhookEvent

from lkps.audit import AuditEntry, AuditEvent, AuditLog, Outcome
from lkps.audit.log import AuditUnavailable
from lkps.clock import Clock
from lkps.livekit.dispatch import AgentDispatcher
from lkps.metrics import (
    SESSION_AGENT_JOIN,
    SESSION_NO_SHOWS,
    SESSION_REDISPATCH_JOINED,
    SESSION_REDISPATCHES,
    SESSIONS_ENDED,
)
from lkps.sessions.records import SessionFacts, SessionState
from lkps.store import Database
from lkps.store import sessions as store

log = logging.getLogger(__name__)

# livekit-server names an agent's participant after its job: `agent-AJ_...`.
_JOB_IN_IDENTITY = re.compile(r"agent-(AJ_[A-Za-z0-9]+)")
_SCAN_LIMIT = 100


class SessionLifecycle:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        dispatcher: AgentDispatcher,
        clock: Clock,
        *,
        agent_join_timeout: float,
    ) -> None:
        self._db = db
        self._audit = audit
        self._dispatcher = dispatcher
        self._clock = clock
        self._timeout = timedelta(seconds=agent_join_timeout)

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

    async def apply(self, event: WebhookEvent) -> bool:
        """Apply one verified event; whether it changed a session. Raises
        `AuditUnavailable` (503) when a step's record could not be written."""
        room = event.room.name
        if not room:
            return False
        now = self._clock.now()
        room_sid = event.room.sid or None
        if event.event == "room_started":
            if room_sid is None:
                return False
            if (facts := await store.reopened(self._db, room, room_sid=room_sid, now=now)) is None:
                await store.note_room(self._db, room, room_sid)
                return False
            await self._record(
                AuditEvent.SESSION_REOPENED,
                facts,
                details={"room_sid": room_sid, "original_room_sid": facts.room_sid},
                undo={"reopened_at": None, "reopened_room_sid": None, "state": "ended"},
            )
            return True
        if event.event == "participant_joined":
            return await self._joined(event.participant, room, room_sid, now)
        if event.event == "room_finished":
            return await self._ended(room, room_sid, now)
        return False

    async def _joined(
        self, participant: ParticipantInfo, room: str, room_sid: str | None, now: datetime
    ) -> bool:
        identity, sid = participant.identity, participant.sid
        if participant.kind == ParticipantInfo.Kind.AGENT:
            match = _JOB_IN_IDENTITY.fullmatch(identity)
            job_id = match.group(1) if match else None
            facts = await store.agent_joined(
                self._db,
                room,
                identity=identity,
                sid=sid,
                job_id=job_id,
                room_sid=room_sid,
                now=now,
            )
            if facts is None:
                return False
            previous = facts.state
            if facts.state == SessionState.AGENT_JOINED:
                previous = "client_joined" if facts.client_joined_at else "granted"
            after_retry = facts.no_show_stage > 0
            await self._record(
                AuditEvent.SESSION_AGENT_JOINED,
                facts,
                details={
                    "participant_identity": identity,
                    "participant_sid": sid,
                    "job_id": job_id,
                    "after_redispatch": after_retry,
                    "seconds_since_grant": facts.grant_to_agent_seconds,
                },
                undo={
                    "agent_joined_at": None,
                    "agent_identity": None,
                    "agent_sid": None,
                    "job_id": None,
                    "state": previous,
                },
            )
            if (seconds := facts.grant_to_agent_seconds) is not None:
                SESSION_AGENT_JOIN.observe(seconds)
            if after_retry:
                SESSION_REDISPATCH_JOINED.inc()
            return True
        if participant.kind != ParticipantInfo.Kind.STANDARD:
            return False  # egress, ingress, SIP: not the session's client
        facts = await store.client_joined(
            self._db, room, identity=identity, sid=sid, room_sid=room_sid, now=now
        )
        if facts is None:
            return False
        await self._record(
            AuditEvent.SESSION_CLIENT_JOINED,
            facts,
            details={"participant_identity": identity, "participant_sid": sid},
            undo={
                "client_joined_at": None,
                "client_identity": None,
                "client_sid": None,
                "state": "granted" if facts.state == SessionState.CLIENT_JOINED else facts.state,
            },
        )
        return True

    async def _ended(self, room: str, room_sid: str | None, now: datetime) -> bool:
        facts = await store.ended(self._db, room, room_sid=room_sid, now=now)
        if facts is None:
            return False
        await self._record(
            AuditEvent.SESSION_ENDED,
            facts,
            details={
                "final_state": facts.final_state,
                "duration_seconds": facts.duration_seconds,
                "agent_joined": facts.agent_joined_at is not None,
                "redispatched": facts.no_show_stage > 0,
            },
            undo={"ended_at": None, "final_state": None, "state": facts.final_state},
        )
        SESSIONS_ENDED.labels(facts.final_state or "granted").inc()
        return True

    # No-shows.

    async def check_no_shows(self) -> int:
        """One scan: claim, record and re-dispatch every no-show due; how many."""
        now = self._clock.now()
        handled = 0
        for facts in await store.claim_no_shows(
            self._db, joined_before=now - self._timeout, now=now, limit=_SCAN_LIMIT
        ):
            await self._record(
                AuditEvent.SESSION_AGENT_MISSING,
                facts,
                details={
                    "timeout_seconds": self._timeout.total_seconds(),
                    "after_redispatch": False,
                },
                undo={"no_show_stage": 0, "agent_missing_at": None},
            )
            SESSION_NO_SHOWS.inc()
            await self._redispatch(facts)
            handled += 1
        for facts in await store.claim_retry_no_shows(
            self._db, missing_before=now - self._timeout, limit=_SCAN_LIMIT
        ):
            # The one retry did not bring the agent either: recorded, not retried again.
            await self._record(
                AuditEvent.SESSION_AGENT_MISSING,
                facts,
                details={
                    "timeout_seconds": self._timeout.total_seconds(),
                    "after_redispatch": True,
                },
                undo={"no_show_stage": 1},
            )
            handled += 1
        return handled

    async def _redispatch(self, facts: SessionFacts) -> None:
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
            await self._record(
                AuditEvent.SESSION_REDISPATCHED,
                facts,
                outcome=Outcome.DENIED,
                reason=f"dispatch failed: {type(exc).__name__}",
                details={"dispatched": False},
            )
            return
        SESSION_REDISPATCHES.labels("dispatched").inc()
        await store.note_redispatch(self._db, facts.session_id, dispatch_id)
        await self._record(
            AuditEvent.SESSION_REDISPATCHED,
            facts,
            details={"dispatched": True, "dispatch_id": dispatch_id},
        )

    # Records.

    async def _record(
        self,
        event: AuditEvent,
        facts: SessionFacts,
        *,
        details: dict[str, Any],
        undo: dict[str, Any] | None = None,
        outcome: Outcome = Outcome.RECORDED,
        reason: str | None = None,
    ) -> None:
        """The step's audit record, linked to the session by its room name and id (and to
        the user and client app who started it); the step undone if it cannot be written."""
        entry = AuditEntry(
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
        try:
            await self._audit.append(entry)
        except AuditUnavailable:
            if undo is not None:
                await _quietly(lambda: store.restore(self._db, facts.session_id, undo))
            raise


async def _quietly(step: Callable[[], Awaitable[None]]) -> None:
    try:
        await step()
    except Exception:
        log.exception("could not undo a session step whose record failed")
