"""What LKPS returns, as frozen dataclasses.

Each result is built from the JSON by a private parser that reads only the keys it knows,
so a newer LKPS that adds fields does not break an older client. Timestamps become
timezone-aware `datetime`s; lists become tuples, so results are immutable throughout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "AgentInfo",
    "AuditRecord",
    "AuthorizationOverride",
    "ChainVerification",
    "Session",
]


@dataclass(frozen=True)
class Session:
    """A started session: join `room_name` at `livekit_url` with `participant_token`.

    The participant token is a bearer credential for the room, so it is left out of
    `repr()`: a session printed to a log does not hand the room to whoever reads it.
    """

    room_name: str
    livekit_url: str
    participant_token: str = field(repr=False)
    # Extensions of this LKPS implementation; None from a server that does not send them.
    session_id: str | None
    expires_at: datetime | None
    # The `X-Request-ID` of the response: the key to LKPS's log lines and audit record.
    request_id: str | None


@dataclass(frozen=True)
class AgentRegistration:
    """An agent worker's registration: the token its worker connects with, where it
    connects, and how often LKPS wants to hear from it.

    `agent_connection` "direct": `token` is a LiveKit worker token (only the `agent`
    grant) for `livekit_url`. "gateway": `token` is a credential for LKPS's agent gateway
    at `gateway_url` (the worker's `/agent` socket goes there), while jobs still join
    their rooms at `livekit_url`. Either is a bearer credential, so `repr()` leaves it out.
    """

    agent_name: str
    livekit_url: str
    token: str = field(repr=False)
    expires_at: datetime
    heartbeat_interval_seconds: int
    presence_ttl_seconds: int
    registration_id: str
    request_id: str | None
    agent_connection: str = "direct"
    gateway_url: str | None = None

    @property
    def worker_url(self) -> str:
        """Where the worker's `/agent` socket connects: the gateway, or LiveKit."""
        return self.gateway_url or self.livekit_url


@dataclass(frozen=True)
class Heartbeat:
    """LKPS's answer to a heartbeat: the registration is alive until `presence_expires_at`."""

    connected: bool
    presence_expires_at: datetime


@dataclass(frozen=True)
class AuthorizationOverride:
    """An operator's override of one agent's client authorization.

    `enforce_client_authz` None leaves enforcement to what the agent registered;
    `additional_clients` are client app ids allowed on top of the authorization source.
    """

    agent_id: str
    enforce_client_authz: bool | None
    additional_clients: tuple[str, ...]
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True)
class ConnectedWorker:
    """One worker of an agent connected through LKPS's agent gateway (gateway mode)."""

    replica_id: str
    worker_id: str | None
    registration_id: str
    connected_at: datetime
    registered: bool
    # "available", or "full": WS_FULL or a load at/above LKPS's target load.
    status: str
    load: float
    job_count: int
    updated_at: datetime


@dataclass(frozen=True)
class AgentInfo:
    """An agent LKPS has seen register, with its presence and effective enforcement."""

    agent_id: str
    present: bool
    # Effective enforcement: the override's when it sets one, else the registration's.
    enforce_client_authz: bool
    registered_enforce_client_authz: bool
    override: AuthorizationOverride | None
    version: str | None
    first_registered_at: datetime
    last_registered_at: datetime
    last_heartbeat_at: datetime | None
    active_registrations: int
    # Live registrations whose worker is connected to LiveKit (None from an older LKPS).
    connected_registrations: int | None
    # Workers connected through the agent gateway (empty in direct mode, or from an
    # older LKPS).
    workers: tuple[ConnectedWorker, ...] = ()


@dataclass(frozen=True)
class SessionStep:
    """One step of a session: granted, client_joined, agent_missing, agent_joined, ended
    or reopened, and when LKPS learnt of it."""

    step: str
    at: datetime


@dataclass(frozen=True)
class SessionRecord:
    """A granted session followed through LiveKit's webhooks (`GET /api/sessions/{id}`)."""

    session_id: str
    room_name: str
    agent_id: str
    state: str
    final_state: str | None
    via: str
    cwid: str
    client_app_id: str
    app_only: bool
    granted_at: datetime
    client_joined_at: datetime | None
    agent_joined_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    room_sid: str | None
    client_identity: str | None
    agent_identity: str | None
    job_id: str | None
    agent_missing_at: datetime | None
    redispatched: bool
    reopened_at: datetime | None
    steps: tuple[SessionStep, ...]


@dataclass(frozen=True)
class AuditRecord:
    """One record of LKPS's hash-chained audit trail (see docs/api.md, "Audit records")."""

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
    # Not hashed into __hash__ (a dict cannot be); equality still compares it.
    details: Mapping[str, Any] = field(hash=False)
    prev_hash: str
    hash: str
    key_id: str | None = None


@dataclass(frozen=True)
class ChainVerification:
    """The result of LKPS checking its audit chain: `ok`, or the first broken link."""

    ok: bool
    records_checked: int
    head_seq: int
    broken_at_seq: int | None
    problem: str | None


# Parsing. A shape error raises ValueError/TypeError/KeyError; the caller of these
# functions (lkps_client._calls) turns that into UnexpectedResponseError.


def _object(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _str(document: Mapping[str, Any], key: str) -> str:
    value = document[key]
    if not isinstance(value, str):
        raise TypeError(f"{key!r} is not a string")
    return value


def _opt_str(document: Mapping[str, Any], key: str) -> str | None:
    value = document.get(key)
    return None if value is None else _str(document, key)


def _bool(document: Mapping[str, Any], key: str) -> bool:
    value = document[key]
    if not isinstance(value, bool):
        raise TypeError(f"{key!r} is not a boolean")
    return value


def _opt_bool(document: Mapping[str, Any], key: str) -> bool | None:
    return None if document.get(key) is None else _bool(document, key)


def _int(document: Mapping[str, Any], key: str) -> int:
    value = document[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key!r} is not an integer")
    return value


def _opt_int(document: Mapping[str, Any], key: str) -> int | None:
    return None if document.get(key) is None else _int(document, key)


def _datetime(document: Mapping[str, Any], key: str) -> datetime:
    # Python 3.11's fromisoformat reads the "Z" suffix and any fraction of a second.
    return datetime.fromisoformat(_str(document, key))


def _opt_datetime(document: Mapping[str, Any], key: str) -> datetime | None:
    return None if document.get(key) is None else _datetime(document, key)


def _str_tuple(document: Mapping[str, Any], key: str) -> tuple[str, ...]:
    values = document.get(key) or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TypeError(f"{key!r} is not a list of strings")
    return tuple(values)


def parse_session(value: Any, request_id: str | None) -> Session:
    document = _object(value)
    return Session(
        room_name=_str(document, "room_name"),
        livekit_url=_str(document, "livekit_url"),
        participant_token=_str(document, "participant_token"),
        session_id=_opt_str(document, "session_id"),
        expires_at=_opt_datetime(document, "expires_at"),
        request_id=request_id,
    )


def parse_registration(value: Any, request_id: str | None) -> AgentRegistration:
    document = _object(value)
    return AgentRegistration(
        agent_name=_str(document, "agent_name"),
        livekit_url=_str(document, "livekit_url"),
        token=_str(document, "token"),
        expires_at=_datetime(document, "expires_at"),
        heartbeat_interval_seconds=_int(document, "heartbeat_interval_seconds"),
        presence_ttl_seconds=_int(document, "presence_ttl_seconds"),
        registration_id=_str(document, "registration_id"),
        request_id=request_id,
        agent_connection=_opt_str(document, "agent_connection") or "direct",
        gateway_url=_opt_str(document, "gateway_url"),
    )


def parse_heartbeat(value: Any) -> Heartbeat:
    document = _object(value)
    return Heartbeat(
        connected=_bool(document, "connected"),
        presence_expires_at=_datetime(document, "presence_expires_at"),
    )


def parse_override(value: Any, agent_id: str | None = None) -> AuthorizationOverride:
    document = _object(value)
    # The override inside an agent list entry may leave out the agent id it belongs to.
    return AuthorizationOverride(
        agent_id=_opt_str(document, "agent_id") or _required(agent_id, "agent_id"),
        enforce_client_authz=_opt_bool(document, "enforce_client_authz"),
        additional_clients=_str_tuple(document, "additional_clients"),
        updated_at=_datetime(document, "updated_at"),
        updated_by=_str(document, "updated_by"),
    )


def _required(value: str | None, key: str) -> str:
    if value is None:
        raise KeyError(key)
    return value


def parse_agent(value: Any) -> AgentInfo:
    document = _object(value)
    agent_id = _str(document, "agent_id")
    override = document.get("override")
    return AgentInfo(
        agent_id=agent_id,
        present=_bool(document, "present"),
        enforce_client_authz=_bool(document, "enforce_client_authz"),
        registered_enforce_client_authz=_bool(document, "registered_enforce_client_authz"),
        override=None if override is None else parse_override(override, agent_id),
        version=_opt_str(document, "version"),
        first_registered_at=_datetime(document, "first_registered_at"),
        last_registered_at=_datetime(document, "last_registered_at"),
        last_heartbeat_at=_opt_datetime(document, "last_heartbeat_at"),
        active_registrations=_int(document, "active_registrations"),
        connected_registrations=_opt_int(document, "connected_registrations"),
        workers=tuple(parse_worker(worker) for worker in _list(document, "workers")),
    )


def _opt_float(document: Mapping[str, Any], key: str) -> float | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{key!r} is not a number")
    return float(value)


def parse_session_record(value: Any) -> SessionRecord:
    document = _object(value)
    steps = document.get("steps") or []
    if not isinstance(steps, list):
        raise TypeError("'steps' is not a list")
    return SessionRecord(
        session_id=_str(document, "session_id"),
        room_name=_str(document, "room_name"),
        agent_id=_str(document, "agent_id"),
        state=_str(document, "state"),
        final_state=_opt_str(document, "final_state"),
        via=_str(document, "via"),
        cwid=_str(document, "cwid"),
        client_app_id=_str(document, "client_app_id"),
        app_only=_bool(document, "app_only"),
        granted_at=_datetime(document, "granted_at"),
        client_joined_at=_opt_datetime(document, "client_joined_at"),
        agent_joined_at=_opt_datetime(document, "agent_joined_at"),
        ended_at=_opt_datetime(document, "ended_at"),
        duration_seconds=_opt_float(document, "duration_seconds"),
        room_sid=_opt_str(document, "room_sid"),
        client_identity=_opt_str(document, "client_identity"),
        agent_identity=_opt_str(document, "agent_identity"),
        job_id=_opt_str(document, "job_id"),
        agent_missing_at=_opt_datetime(document, "agent_missing_at"),
        redispatched=_bool(document, "redispatched"),
        reopened_at=_opt_datetime(document, "reopened_at"),
        steps=tuple(
            SessionStep(step=_str(step, "step"), at=_datetime(step, "at"))
            for step in map(_object, steps)
        ),
    )


def parse_session_records(value: Any) -> list[SessionRecord]:
    sessions = _object(value)["sessions"]
    if not isinstance(sessions, list):
        raise TypeError("'sessions' is not a list")
    return [parse_session_record(session) for session in sessions]


def parse_worker(value: Any) -> ConnectedWorker:
    document = _object(value)
    load = document["load"]
    if not isinstance(load, int | float) or isinstance(load, bool):
        raise TypeError("'load' is not a number")
    return ConnectedWorker(
        replica_id=_str(document, "replica_id"),
        worker_id=_opt_str(document, "worker_id"),
        registration_id=_str(document, "registration_id"),
        connected_at=_datetime(document, "connected_at"),
        registered=_bool(document, "registered"),
        status=_str(document, "status"),
        load=float(load),
        job_count=_int(document, "job_count"),
        updated_at=_datetime(document, "updated_at"),
    )


def _list(document: Mapping[str, Any], key: str) -> list[Any]:
    value = document.get(key) or []
    if not isinstance(value, list):
        raise TypeError(f"{key!r} is not a list")
    return value


def parse_agents(value: Any) -> list[AgentInfo]:
    agents = _object(value)["agents"]
    if not isinstance(agents, list):
        raise TypeError("'agents' is not a list")
    return [parse_agent(agent) for agent in agents]


def parse_audit_record(value: Any) -> AuditRecord:
    document = _object(value)
    return AuditRecord(
        seq=_int(document, "seq"),
        record_id=_str(document, "record_id"),
        occurred_at=_datetime(document, "occurred_at"),
        event=_str(document, "event"),
        outcome=_str(document, "outcome"),
        status=_int(document, "status"),
        reason=_opt_str(document, "reason"),
        request_id=_opt_str(document, "request_id"),
        actor_tenant_id=_opt_str(document, "actor_tenant_id"),
        actor_object_id=_opt_str(document, "actor_object_id"),
        actor_cwid=_opt_str(document, "actor_cwid"),
        client_app_id=_opt_str(document, "client_app_id"),
        agent_id=_opt_str(document, "agent_id"),
        room_name=_opt_str(document, "room_name"),
        registration_id=_opt_str(document, "registration_id"),
        client_ip=_opt_str(document, "client_ip"),
        details=dict(_object(document.get("details") or {})),
        prev_hash=_str(document, "prev_hash"),
        hash=_str(document, "hash"),
        key_id=_opt_str(document, "key_id"),
    )


def parse_audit_page(value: Any) -> tuple[list[AuditRecord], str | None]:
    document = _object(value)
    records = document["records"]
    if not isinstance(records, list):
        raise TypeError("'records' is not a list")
    return [parse_audit_record(record) for record in records], _opt_str(document, "next_cursor")


def parse_checkpoints(value: Any) -> list[dict[str, Any]]:
    """The signed checkpoints as LKPS served them: each object kept whole, since what
    verifies them (`lkps audit verify --checkpoints`) reads them as exported."""
    checkpoints = _object(value)["checkpoints"]
    if not isinstance(checkpoints, list):
        raise TypeError("checkpoints is not a list")
    return [dict(_object(checkpoint)) for checkpoint in checkpoints]


def parse_verification(value: Any) -> ChainVerification:
    document = _object(value)
    return ChainVerification(
        ok=_bool(document, "ok"),
        records_checked=_int(document, "records_checked"),
        head_seq=_int(document, "head_seq"),
        broken_at_seq=_opt_int(document, "broken_at_seq"),
        problem=_opt_str(document, "problem"),
    )
