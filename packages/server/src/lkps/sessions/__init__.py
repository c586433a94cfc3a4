"""Session start: a fresh room, a participant token, and the agent dispatched into it."""

from lkps.sessions.service import SESSION_FAILED, SessionRequest, SessionService, StartedSession

__all__ = ["SESSION_FAILED", "SessionRequest", "SessionService", "StartedSession"]
