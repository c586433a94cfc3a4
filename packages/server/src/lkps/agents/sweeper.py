"""Make lapsed registrations visible: in the audit trail, once each, and in the gauges.

Presence itself never depends on this sweep: a session start compares `expires_at`
with the clock. The sweep only reports the lapse.
"""

from __future__ import annotations

from lkps.agents.registry import AgentRegistry
from lkps.audit import AuditEvent, AuditLog, AuditUnavailable
from lkps.metrics import AGENTS_PRESENT, AGENTS_REGISTERED, REGISTRATIONS_LIVE

LAPSED = "no register or heartbeat within the presence TTL"


class PresenceSweeper:
    """Run as a background job (`lkps.background`): a failing run is logged and retried."""

    def __init__(self, registry: AgentRegistry, audit: AuditLog) -> None:
        self._registry = registry
        self._audit = audit

    async def run_once(self) -> None:
        await self.sweep()
        await self.update_gauges()

    async def sweep(self) -> int:
        """Record each registration whose presence lapsed; how many there were.

        The registry claims them atomically (one replica reports each); one that
        cannot be recorded is handed back, to be claimed again by a later sweep."""
        expired = await self._registry.claim_expired()
        for done, (registration_id, agent_id) in enumerate(expired):
            try:
                await self._audit.record_event(
                    AuditEvent.AGENT_EXPIRE,
                    reason=LAPSED,
                    agent_id=agent_id,
                    registration_id=registration_id,
                )
            except AuditUnavailable:
                await self._registry.reopen([r for r, _ in expired[done:]])
                raise
        return len(expired)

    async def update_gauges(self) -> None:
        counts = await self._registry.counts()
        AGENTS_REGISTERED.set(counts.registered)
        AGENTS_PRESENT.set(counts.present)
        REGISTRATIONS_LIVE.set(counts.live_registrations)
