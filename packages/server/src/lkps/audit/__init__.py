"""The audit trail: append-only, hash-chained, written before the response it records."""

from lkps.audit.chain import ChainVerification, verify_chain
from lkps.audit.log import AuditLog, AuditUnavailable
from lkps.audit.records import AuditEntry, AuditEvent, AuditFilter, AuditRecord, Outcome
from lkps.audit.scope import AuditScope, RequestContext
from lkps.audit.trail import AuditTrail

__all__ = [
    "AuditEntry",
    "AuditEvent",
    "AuditFilter",
    "AuditLog",
    "AuditRecord",
    "AuditScope",
    "AuditTrail",
    "AuditUnavailable",
    "ChainVerification",
    "Outcome",
    "RequestContext",
    "verify_chain",
]
