"""Agents: registrations and presence (which agents can be dispatched right now), and
the use cases agents and operators call."""

from lkps.agents.presence import AgentPresence, Registration
from lkps.agents.registry import (
    AgentAtCapacity,
    AgentRegistry,
    agent_at_capacity,
    agent_not_connected,
)
from lkps.agents.service import (
    AgentGrant,
    AgentIdentity,
    AgentOverview,
    AgentService,
    AgentTerms,
    RegistrationRequest,
)
from lkps.agents.sweeper import PresenceSweeper

__all__ = [
    "AgentAtCapacity",
    "AgentGrant",
    "AgentIdentity",
    "AgentOverview",
    "AgentPresence",
    "AgentRegistry",
    "AgentService",
    "AgentTerms",
    "PresenceSweeper",
    "Registration",
    "RegistrationRequest",
    "agent_at_capacity",
    "agent_not_connected",
]
