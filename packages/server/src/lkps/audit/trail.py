"""The trail as auditors read it: every read takes the auditor app role, checked
before anything the caller sent is looked at."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from lkps.audit.chain import ChainVerification
from lkps.audit.checkpoints import Checkpoint, Checkpointer, CheckpointError
from lkps.audit.log import AuditLog
from lkps.audit.records import AuditFilter, AuditRecord
from lkps.errors import BadRequest
from lkps.identity import AppRoles, Caller, require_role
from lkps.metrics import AUDIT_CHAIN_VERIFICATIONS


@dataclass(frozen=True, slots=True)
class AuditPage:
    records: list[AuditRecord]
    # Pass back as `cursor` for the next (older) page; None on the last one.
    next_cursor: str | None


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, seq = text.partition(":")
        if prefix != "seq" or not seq.isdigit():
            raise ValueError(cursor)
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest('"cursor" is not a cursor this API returned') from None


class AuditTrail:
    def __init__(
        self, log: AuditLog, roles: AppRoles, checkpointer: Checkpointer | None = None
    ) -> None:
        self._log = log
        self._roles = roles
        self._checkpointer = checkpointer

    async def search(
        self, caller: Caller, where: AuditFilter, *, limit: int, cursor: str | None
    ) -> AuditPage:
        """Matching records, newest first, `limit` at a time. The order is the chain's
        (by sequence number), so pages never skip or repeat a record."""
        require_role(caller, self._roles.auditor)
        for name, moment in (("since", where.since), ("until", where.until)):
            if moment is not None and moment.tzinfo is None:
                raise BadRequest(f'"{name}" needs a time zone (e.g. 2026-11-23T12:00:00Z)')
        before_seq = decode_cursor(cursor) if cursor else None
        records = await self._log.query(where, limit=limit + 1, before_seq=before_seq)
        page, more = records[:limit], len(records) > limit
        return AuditPage(page, encode_cursor(page[-1].seq) if more else None)

    async def verify(self, caller: Caller) -> ChainVerification:
        """The chain, with this LKPS's audit keys and against its own stored checkpoints:
        a tail removed with the head rewound shows while a checkpoint past it is still
        stored, and records from before the chain was keyed pass once one covers them."""
        require_role(caller, self._roles.auditor)
        result = await self._verify()
        # Counted for the alert on a broken chain (deploy/prometheus/lkps-alerts.yaml).
        AUDIT_CHAIN_VERIFICATIONS.labels("ok" if result.ok else "broken").inc()
        return result

    async def _verify(self) -> ChainVerification:
        signed = None
        if self._checkpointer is not None:
            try:
                signed = await self._checkpointer.signed_heads()
            except CheckpointError as error:
                return ChainVerification(False, 0, 0, None, str(error))
        return await self._log.verify(checkpoints=signed)

    async def checkpoints(self, caller: Caller, *, limit: int) -> list[Checkpoint]:
        """The newest signed checkpoints, newest first (none without a signing key)."""
        require_role(caller, self._roles.auditor)
        if self._checkpointer is None:
            return []
        return await self._checkpointer.latest(limit)
