"""Make lapsed registrations visible: in the audit trail, once each, and in the gauges.

Presence itself never depends on this sweep: a session start compares `expires_at`
with the clock. The sweep only reports the lapse.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from sqlalchemy.ext.asyncio import AsyncSession

from lkps.agents.registry import AgentRegistry
from lkps.audit import AuditEntry, AuditEvent, AuditLog
from lkps.metrics import AGENTS_PRESENT, AGENTS_REGISTERED, REGISTRATIONS_LIVE

LAPSED = "no register or heartbeat within the presence TTL"

# Told which registrations ended, once that is committed (gateway mode: their worker
# sockets on this replica close, lkps.gateway.live.LiveConnections.end_registrations).
RegistrationsEnded = Callable[[Collection[str]], object]


class PresenceSweeper:
    """Run as a background job (`lkps.background`): a failing run is logged and retried."""

    def __init__(
        self,
        registry: AgentRegistry,
        audit: AuditLog,
        *,
        registrations_ended: RegistrationsEnded | None = None,
    ) -> None:
        self._registry = registry
        self._audit = audit
        self._registrations_ended = registrations_ended

    async def run_once(self) -> None:
        await self.sweep()
        await self.update_gauges()

    async def sweep(self) -> int:
        """Record each registration whose presence lapsed; how many there were.

        The registry claims them atomically (one replica reports each), in the
        transaction that records them: a claim that cannot be recorded is not made, and
        a later sweep claims it again."""

        async def claim(session: AsyncSession) -> tuple[list[str], list[AuditEntry]]:
            expired = await self._registry.claim_expired(session=session)
            return [registration_id for registration_id, _ in expired], [
                self._audit.event_entry(
                    AuditEvent.AGENT_EXPIRE,
                    reason=LAPSED,
                    agent_id=agent_id,
                    registration_id=registration_id,
                )
                for registration_id, agent_id in expired
            ]

        claimed, _ = await self._audit.change(claim)
        if claimed and self._registrations_ended is not None:
            self._registrations_ended(claimed)
        return len(claimed)

    async def update_gauges(self) -> None:
        counts = await self._registry.counts()
        AGENTS_REGISTERED.set(counts.registered)
        AGENTS_PRESENT.set(counts.present)
        REGISTRATIONS_LIVE.set(counts.live_registrations)
