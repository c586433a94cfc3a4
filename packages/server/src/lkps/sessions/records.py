"""What LKPS knows about a granted session, as LiveKit's webhooks tell it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any


class SessionState(StrEnum):
    GRANTED = "granted"
    CLIENT_JOINED = "client_joined"
    AGENT_JOINED = "agent_joined"
    ENDED = "ended"
    # LiveKit recreated the room after the session had ended (a token used again).
    REOPENED = "reopened"


# The order a session moves in: an event never moves it back (events arrive out of order).
PROGRESS = (SessionState.GRANTED, SessionState.CLIENT_JOINED, SessionState.AGENT_JOINED)


@dataclass(frozen=True, slots=True)
class SessionGrant:
    """A session as granted: what the sessions table holds before LiveKit says anything."""

    session_id: str
    room_name: str
    agent_id: str
    via: str
    actor_tenant_id: str | None
    actor_object_id: str | None
    actor_cwid: str
    client_app_id: str
    app_only: bool
    dispatch_metadata: str
    granted_at: datetime

    def row(self) -> dict[str, Any]:
        """Its row in the sessions table, as stored at the grant (no step yet)."""
        return {
            "session_id": self.session_id,
            "room_name": self.room_name,
            "agent_id": self.agent_id,
            "state": SessionState.GRANTED.value,
            "via": self.via,
            "actor_tenant_id": self.actor_tenant_id,
            "actor_object_id": self.actor_object_id,
            "actor_cwid": self.actor_cwid,
            "client_app_id": self.client_app_id,
            "app_only": self.app_only,
            "dispatch_metadata": self.dispatch_metadata,
            "granted_at": self.granted_at,
            "no_show_stage": 0,
        }


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """A session row: the grant and every step LiveKit reported."""

    session_id: str
    room_name: str
    agent_id: str
    state: str
    via: str
    actor_tenant_id: str | None
    actor_object_id: str | None
    actor_cwid: str
    client_app_id: str
    app_only: bool
    dispatch_metadata: str
    granted_at: datetime
    room_sid: str | None
    client_identity: str | None
    client_sid: str | None
    client_joined_at: datetime | None
    agent_identity: str | None
    agent_sid: str | None
    job_id: str | None
    agent_joined_at: datetime | None
    no_show_stage: int
    agent_missing_at: datetime | None
    redispatch_id: str | None
    ended_at: datetime | None
    final_state: str | None
    reopened_at: datetime | None
    reopened_room_sid: str | None

    @property
    def duration_seconds(self) -> float | None:
        """From the client's join to the room's end; None until both are known."""
        if self.client_joined_at is None or self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.client_joined_at).total_seconds())

    @property
    def grant_to_agent_seconds(self) -> float | None:
        if self.agent_joined_at is None:
            return None
        return max(0.0, (self.agent_joined_at - self.granted_at).total_seconds())


SESSION_FIELDS = tuple(entry.name for entry in fields(SessionFacts))
