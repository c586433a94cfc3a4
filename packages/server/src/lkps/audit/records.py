"""What an audit record says: the one definition of its fields.

`AuditEntry` is a record before it joins the chain, `AuditRecord` the same content
as stored, with its place in the chain. Everything else that lists the fields derives
them from these two (the hashed fields in `chain.py`) or is pinned to them by
tests/unit/audit/test_record_shape.py (the table, the API's and the client's models),
so a field added here cannot be stored unhashed or served undocumented.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any


class AuditEvent(StrEnum):
    SESSION_START = "session.start"
    AGENT_REGISTER = "agent.register"
    AGENT_RENEW = "agent.renew"
    AGENT_DEREGISTER = "agent.deregister"
    AGENT_EXPIRE = "agent.expire"
    # The agent gateway turned a worker connection away (impersonation, protocol).
    AGENT_WORKER_REFUSED = "agent.worker_refused"
    AUTHZ_OVERRIDE_SET = "admin.authz_override.set"
    AUTHZ_OVERRIDE_CLEAR = "admin.authz_override.clear"
    # A granted session's steps, from LiveKit's webhooks (lkps.sessions.lifecycle).
    SESSION_CLIENT_JOINED = "session.client_joined"
    SESSION_AGENT_JOINED = "session.agent_joined"
    SESSION_ENDED = "session.ended"
    SESSION_AGENT_MISSING = "session.agent_missing"
    SESSION_REDISPATCHED = "session.redispatched"
    SESSION_REOPENED = "session.reopened"


class Outcome(StrEnum):
    GRANTED = "granted"
    DENIED = "denied"
    # Events LKPS records on its own behalf (a registration expiring).
    RECORDED = "recorded"


@dataclass(slots=True)
class AuditEntry:
    """A record before it joins the chain: no sequence number, no hash yet."""

    event: AuditEvent
    outcome: Outcome
    status: int
    occurred_at: datetime
    record_id: str
    reason: str | None = None
    request_id: str | None = None
    actor_tenant_id: str | None = None
    actor_object_id: str | None = None
    actor_cwid: str | None = None
    client_app_id: str | None = None
    agent_id: str | None = None
    room_name: str | None = None
    registration_id: str | None = None
    client_ip: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def log_fields(self) -> dict[str, object]:
        """What the log line of a written record carries: the actor's tenant and
        object ids stay in the trail, which fewer people read than a log stream."""
        return {
            "audit_event": str(self.event),
            "outcome": str(self.outcome),
            "status": self.status,
            "reason": self.reason,
            "agent_id": self.agent_id,
            "client_app_id": self.client_app_id,
            "cwid": self.actor_cwid,
            "room_name": self.room_name,
        }


ENTRY_FIELDS = tuple(entry_field.name for entry_field in fields(AuditEntry))


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A record in the chain, as stored."""

    seq: int
    record_id: str
    occurred_at: datetime
    event: str
    outcome: str
    status: int
    reason: str | None
    request_id: str | None
    actor_tenant_id: str | None
    actor_object_id: str | None
    actor_cwid: str | None
    client_app_id: str | None
    agent_id: str | None
    room_name: str | None
    registration_id: str | None
    client_ip: str | None
    details: str | None
    prev_hash: str
    hash: str
    # Which audit key chained the record (`lkps.audit.keys`); None for records chained
    # before the chain was keyed (plain SHA-256). Set by the chaining, like the links.
    key_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        document = {name: getattr(self, name) for name in self.__dataclass_fields__}
        document["occurred_at"] = self.occurred_at.isoformat()
        document["details"] = json.loads(self.details) if self.details else {}
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> AuditRecord:
        """The record `as_json` (the audit API, an export) wrote: its details back in
        the canonical text they were stored and hashed as."""
        from lkps.audit.chain import canonical_json

        values: dict[str, Any] = {name: document.get(name) for name in cls.__dataclass_fields__}
        values["occurred_at"] = datetime.fromisoformat(str(document["occurred_at"]))
        details = document.get("details")
        values["details"] = canonical_json(details) if details else None
        return cls(**values)


RECORD_FIELDS = tuple(record_field.name for record_field in fields(AuditRecord))


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """A search of the trail: every field given must match (`since` <= occurred_at <
    `until`). Field names are the record's own."""

    event: str | None = None
    outcome: str | None = None
    agent_id: str | None = None
    client_app_id: str | None = None
    actor_cwid: str | None = None
    since: datetime | None = None
    until: datetime | None = None
