"""What an audit record says."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class AuditEvent(StrEnum):
    SESSION_START = "session.start"
    AGENT_REGISTER = "agent.register"
    AGENT_RENEW = "agent.renew"
    AGENT_DEREGISTER = "agent.deregister"
    AGENT_EXPIRE = "agent.expire"
    AUTHZ_OVERRIDE_SET = "admin.authz_override.set"
    AUTHZ_OVERRIDE_CLEAR = "admin.authz_override.clear"


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

    def as_json(self) -> dict[str, Any]:
        document = {name: getattr(self, name) for name in self.__dataclass_fields__}
        document["occurred_at"] = self.occurred_at.isoformat()
        document["details"] = json.loads(self.details) if self.details else {}
        return document
