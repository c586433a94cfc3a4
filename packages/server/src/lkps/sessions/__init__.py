"""Session start: a fresh room, a participant token, and the agent dispatched into it."""

from lkps.sessions.service import SessionService, StartedSession

__all__ = ["SessionService", "StartedSession"]
