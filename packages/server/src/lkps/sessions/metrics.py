"""Session-start metrics, counted from the audit record each attempt leaves.

Counted from the record, not the response, so that every attempt is counted once and
exactly as the trail has it (denials before authentication included)."""

from __future__ import annotations

from prometheus_client import Counter

from lkps.audit import AuditEntry, AuditEvent
from lkps.metrics import SESSION_STARTS

# Statuses after which a session start's agent is one LKPS knows (registered): only
# those label a series with the agent, so callers cannot mint series by naming agents.
_KNOWN_AGENT_STATUSES = frozenset({200, 201, 403})

# Label children by label values (bounded: outcomes, statuses, known agents):
# `.labels()` validates and locks on every call.
_session_starts: dict[tuple[str, int, str], Counter] = {}


def count_session_start(entry: AuditEntry) -> None:
    """An `AuditLog` observer: counts session-start records, ignores the rest."""
    if entry.event != AuditEvent.SESSION_START:
        return
    agent = entry.agent_id if entry.status in _KNOWN_AGENT_STATUSES and entry.agent_id else "-"
    key = (str(entry.outcome), entry.status, agent)
    starts = _session_starts.get(key)
    if starts is None:
        starts = _session_starts[key] = SESSION_STARTS.labels(key[0], str(entry.status), agent)
    starts.inc()
