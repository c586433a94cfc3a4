"""The SDK's errors: each one is a reason the agent cannot keep running, and says what to fix.

Transient trouble (LKPS or Entra unreachable, a 503, a 429) never raises: the SDK retries
and reports it in `AgentStatus`. These are the cases retrying cannot heal.
"""

from __future__ import annotations

__all__ = [
    "LiveKitRejectedTokenError",
    "LkpsAgentError",
    "RegistrationRefusedError",
    "UnsupportedLiveKitAgentsError",
]


class LkpsAgentError(Exception):
    """The agent cannot run as configured; the message names the cause."""


class RegistrationRefusedError(LkpsAgentError):
    """LKPS refused the registration for a reason that will not change by retrying: a
    user token instead of an app-only one (403), a request LKPS rejects (400), or a
    token LKPS keeps rejecting (401: wrong tenant or audience)."""


class LiveKitRejectedTokenError(LkpsAgentError):
    """LiveKit refused the worker token LKPS issued, even a freshly issued one: LKPS and
    this LiveKit server do not share an API key and secret, or the LiveKit URL LKPS hands
    out points at another deployment. Only the LKPS operators can fix this."""


class UnsupportedLiveKitAgentsError(LkpsAgentError):
    """The installed livekit-agents is outside the range this SDK was tested with, or its
    worker no longer has the internals the SDK injects the LKPS token through."""
