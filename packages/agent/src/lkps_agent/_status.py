"""What the SDK is doing, for the agent's own health checks and dashboards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = ["AgentState", "AgentStatus"]


class AgentState(StrEnum):
    STARTING = "starting"
    """Not registered yet (the first registration may be retrying)."""
    REGISTERED = "registered"
    """Registered and heard from by LKPS within the presence TTL."""
    DEGRADED = "degraded"
    """LKPS or Entra failed lately; retrying. The worker keeps its LiveKit connection."""
    STOPPED = "stopped"
    """Deregistered after a graceful shutdown (or never started)."""
    FAILED = "failed"
    """Stopped by an error retrying cannot heal; see `last_error`."""


@dataclass(frozen=True)
class AgentStatus:
    """A snapshot; the LiveKit token itself is never part of it."""

    state: AgentState
    agent_name: str | None
    registration_id: str | None
    livekit_url: str | None
    token_expires_at: datetime | None
    presence_expires_at: datetime | None
    last_contact_at: datetime | None
    """When LKPS last answered a register or heartbeat."""
    consecutive_failures: int
    last_error: str | None
    worker_connections: int
    """Worker WebSocket connections opened with an LKPS token (reconnects included)."""
    worker_connected: bool
    """The worker is registered with LiveKit now (LKPS sends sessions only then)."""

    @property
    def healthy(self) -> bool:
        """Registered, or degraded while the registration is still within its presence
        TTL (sessions still reach this agent)."""
        if self.state is AgentState.REGISTERED:
            return True
        if self.state is AgentState.DEGRADED and self.presence_expires_at is not None:
            return datetime.now(self.presence_expires_at.tzinfo) < self.presence_expires_at
        return False
