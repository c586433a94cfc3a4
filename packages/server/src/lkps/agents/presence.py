"""What LKPS knows of an agent right now: value types only, shared by the registry,
the store's queries and the operators' view, so none of them imports the others."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime


def effective_enforcement(registered: bool, override: bool | None) -> bool:
    """An operator's override wins over what the agent registered with."""
    return registered if override is None else override


@dataclass(frozen=True, slots=True)
class AgentFacts:
    """A present agent as one store read finds it."""

    enforce_client_authz: bool
    version: str | None
    override_enforce: bool | None
    additional_clients: tuple[str, ...]
    # Gateway mode: some connected worker can take a job (direct mode cannot tell).
    has_capacity: bool = True


@dataclass(frozen=True, slots=True)
class AgentPresence:
    agent_id: str
    registered_enforce: bool
    version: str | None
    override_enforce: bool | None
    additional_clients: frozenset[str]
    has_capacity: bool = True

    @property
    def enforce_client_authz(self) -> bool:
        return effective_enforcement(self.registered_enforce, self.override_enforce)


@dataclass(frozen=True, slots=True)
class Registration:
    registration_id: str
    agent_id: str
    renewed: bool
    enforce_client_authz: bool
    presence_expires_at: datetime


@dataclass(frozen=True, slots=True)
class AgentCounts:
    registered: int
    present: int
    live_registrations: int


@dataclass(frozen=True, slots=True)
class AgentSummary:
    """An agent that ever registered, with its live registrations counted."""

    agent_id: str
    enforce_client_authz: bool
    version: str | None
    first_registered_at: datetime
    last_registered_at: datetime
    last_heartbeat_at: datetime | None
    active_registrations: int
    connected_registrations: int


@dataclass(frozen=True, slots=True)
class ConnectedWorker:
    """One worker connection through the gateway, as the store last heard of it."""

    agent_id: str
    connection_id: str
    registration_id: str
    replica_id: str
    worker_id: str | None
    connected_at: datetime
    registered: bool
    available: bool
    load: float
    job_count: int
    updated_at: datetime


def livekit_float(value: float) -> float:
    """`value` at float32 precision, as livekit-server holds both a worker's load (the
    protocol's `float`) and its `agents.target_load`: a worker reporting 0.7 is at a
    target of 0.7 only when both sides are rounded alike."""
    rounded: float = struct.unpack("f", struct.pack("f", value))[0]
    return rounded


def reported_load(load: float) -> float:
    """A worker's reported load as LKPS holds it: within [0, 1], and NaN as 1 (a worker
    that cannot say how busy it is takes no job on LKPS's account)."""
    return min(max(load, 0.0), 1.0) if load == load else 1.0


def takes_jobs(available: bool, load: float, target_load: float) -> bool:
    """LiveKit's rule for offering a job to a worker (livekit-server `agents.target_load`):
    not WS_FULL, and its load below the target."""
    return available and livekit_float(load) < livekit_float(target_load)
