"""Agent registrations and presence: which agents can be dispatched right now."""

from lkps.agents.registry import AgentPresence, AgentRegistry, Registration, agent_not_connected

__all__ = ["AgentPresence", "AgentRegistry", "Registration", "agent_not_connected"]
