"""What the double remembers, as immutable records tests can read from any thread.

Each record is a frozen snapshot; the double replaces a record when something changes,
so a test never sees one half-updated. Nothing here holds a token: a worker keeps its
token's claims and a fingerprint (a hash prefix) so that tests can assert "reconnected
with a different token" without the double ever storing or logging a credential.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

_ALPHABET = string.ascii_letters + string.digits

# LiveKit's id prefixes (livekit/protocol utils/guid).
ROOM_PREFIX = "RM_"
PARTICIPANT_PREFIX = "PA_"
WORKER_PREFIX = "AW_"
JOB_PREFIX = "AJ_"
DISPATCH_PREFIX = "AD_"


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(12))


@dataclass(frozen=True)
class RoomRecord:
    sid: str
    name: str
    created_at: float
    empty_timeout: int
    departure_timeout: int
    max_participants: int
    metadata: str = ""
    # Set when a participant that counts (not an agent) first joins / last leaves.
    first_joined_at: float | None = None
    last_left_at: float | None = None
    closed_at: float | None = None
    close_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.closed_at is None


@dataclass(frozen=True)
class ParticipantRecord:
    sid: str
    identity: str
    room: str
    room_sid: str
    kind: str  # LiveKit's ParticipantInfo.Kind name: STANDARD, AGENT, ...
    dependent: bool  # agents and recorders: not counted toward max_participants
    joined_at: float
    via: str  # "join" (the double's join entry point) or "rtc" (the signalling socket)
    name: str = ""
    metadata: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    sdk: str = ""
    left_at: float | None = None
    disconnect_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.left_at is None


@dataclass(frozen=True)
class DispatchRecord:
    id: str
    agent_name: str
    room: str
    room_sid: str
    metadata: str
    created_at: float
    # The dispatch LiveKit adds to a room whose configuration names no agent: it
    # reaches workers registered without an agent name (automatic dispatch).
    implicit: bool = False
    attributes: Mapping[str, str] = field(default_factory=dict)
    deployment: str = ""
    deleted_at: float | None = None


@dataclass(frozen=True)
class WorkerRecord:
    """One `/agent` connection; a reconnecting worker gets a new record."""

    id: str
    api_key: str
    claims: Mapping[str, Any]
    token_fingerprint: str
    token_expires_at: float
    connected_at: float
    agent_name: str = ""
    job_type: str = ""  # JT_ROOM, JT_PUBLISHER, JT_PARTICIPANT once registered
    namespace: str = ""
    deployment: str = ""
    version: str = ""
    registered_at: float | None = None
    status: str = "WS_AVAILABLE"
    load: float = 0.0
    job_count: int = 0
    disconnected_at: float | None = None
    disconnect_reason: str | None = None

    @property
    def connected(self) -> bool:
        return self.disconnected_at is None

    @property
    def registered(self) -> bool:
        return self.registered_at is not None


@dataclass(frozen=True)
class JobRecord:
    """A job a worker accepted and was assigned (LiveKit keeps no other kind)."""

    id: str
    dispatch_id: str
    agent_name: str
    room: str
    room_sid: str
    metadata: str
    worker_id: str
    participant_identity: str
    participant_name: str
    assigned_at: float
    status: str = "JS_RUNNING"
    error: str = ""
    updated_at: float | None = None
    # Every status the worker reported with `update_job`, in order.
    status_updates: tuple[str, ...] = ()
    terminated_at: float | None = None


@dataclass(frozen=True)
class DroppedDispatch:
    """A job LiveKit would have dropped without telling anyone: no worker registered
    under the agent name, every worker refused or was full, or none answered."""

    dispatch_id: str
    agent_name: str
    room: str
    metadata: str
    reason: str
    at: float
    workers_tried: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkerMessage:
    """One message on a worker socket (pings and periodic status updates left out)."""

    worker_id: str
    direction: str  # "in" (worker -> server) or "out"
    type: str  # the WorkerMessage / ServerMessage oneof: register, availability, ...
    at: float
    job_id: str = ""


def to_json(record: Any) -> dict[str, Any]:
    data: dict[str, Any] = asdict(record)
    return data
