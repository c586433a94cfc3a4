"""The interface every authorization source implements."""

from __future__ import annotations

from typing import Protocol

from lkps.errors import ServiceUnavailable
from lkps.store.engine import UNAVAILABLE_MESSAGE


class AuthorizationUnavailable(ServiceUnavailable):
    def __init__(self, reason: str) -> None:
        super().__init__(UNAVAILABLE_MESSAGE, reason=f"authorization source unavailable: {reason}")


class AuthorizationSource(Protocol):
    name: str

    async def pre_authorized_clients(self, agent_id: str) -> frozenset[str] | None:
        """Lower-case client app ids pre-authorized for the agent.

        `None` when the source does not know the agent at all (so the owner has
        something to fix); raises `AuthorizationUnavailable` when it cannot answer.
        """
        ...

    def ready(self) -> bool:
        """Whether the source can currently answer (for `/api/health/ready`)."""
        ...

    async def start(self) -> None:
        """Prepare at startup (e.g. check credentials). Never raises."""
        ...

    async def aclose(self) -> None:
        """Release what the source holds."""
        ...
