"""`agent.worker_refused`: every worker the gateway turns away, in the audit trail.

A refusal is a denial record: who the credential said the worker was (agent and
registration, when it got that far), the agent name it asked for, where it came from,
and why. `status` is what the worker was answered: 401 at the handshake, or the
WebSocket close code (1008, 1009) for a refused message.
"""

from __future__ import annotations

import logging
import uuid

from lkps.audit import AuditEntry, AuditEvent, AuditLog, Outcome
from lkps.errors import ServiceUnavailable

logger = logging.getLogger("lkps.gateway")


class AuditedRefusals:
    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    async def refused(
        self,
        *,
        reason: str,
        agent_id: str | None,
        registration_id: str | None,
        client_ip: str | None,
        requested_name: str | None = None,
        status: int,
    ) -> None:
        details = {"requested_agent_name": requested_name} if requested_name is not None else {}
        entry = AuditEntry(
            event=AuditEvent.AGENT_WORKER_REFUSED,
            outcome=Outcome.DENIED,
            status=status,
            occurred_at=self._audit.clock.now(),
            record_id=str(uuid.uuid4()),
            reason=reason,
            client_app_id=agent_id,
            agent_id=agent_id,
            registration_id=registration_id,
            client_ip=client_ip,
            details=details,
        )
        try:
            await self._audit.append(entry)
        except ServiceUnavailable:
            # The worker is refused all the same: a refusal needs no record to be safe.
            logger.error("could not record a refused worker", extra={"reason": reason})
