"""Signed checkpoints: the chain head (sequence number and hash), signed with Ed25519.

A keyed chain stops anyone without the audit key from rewriting records, but not from
removing the newest ones and rewinding the head: what is left is a valid, shorter
chain. A checkpoint taken every `LKPS_AUDIT_CHECKPOINT_SECONDS` (and at shutdown) says
where the head was, signed with a private key the database never sees; kept outside
the database (the log stream a SIEM collects, an export), it shows any record removed,
rewritten or missing up to its sequence number, to anyone holding the public key.

A checkpoint as exported and served (one JSON object; a file of them, one a line, is
what `lkps audit verify --checkpoints` reads):
`{"seq", "hash", "time", "key_id", "signer", "signature"}`. The signature is Ed25519
over the canonical JSON (sorted keys, no spaces) of every other field plus
`"type": "lkps.audit.checkpoint"`, in base64url without padding; `signer` is the first
16 hex digits of the SHA-256 of the raw public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lkps.audit.chain import canonical_json, canonical_time
from lkps.audit.log import AuditLog
from lkps.clock import Clock
from lkps.config import ConfigurationError

records_log = logging.getLogger("lkps.audit")

CHECKPOINT_TYPE = "lkps.audit.checkpoint"
_HASH_LENGTH = 64
_FIELDS = ("seq", "hash", "time", "key_id", "signer", "signature")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose signature does not verify."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    hash: str
    time: datetime
    key_id: str | None
    signer: str
    signature: str

    def signed_bytes(self) -> bytes:
        return signed_bytes(self.seq, self.hash, self.time, self.key_id, self.signer)

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "hash": self.hash,
            "time": canonical_time(self.time),
            "key_id": self.key_id,
            "signer": self.signer,
            "signature": self.signature,
        }

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        try:
            signature = base64.urlsafe_b64decode(self.signature + "=" * (-len(self.signature) % 4))
            public_key.verify(signature, self.signed_bytes())
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True

    @classmethod
    def from_json(cls, document: object) -> Checkpoint:
        """A checkpoint from its JSON object; `CheckpointError` names what is wrong."""
        if not isinstance(document, dict):
            raise CheckpointError("not a JSON object")
        missing = [name for name in _FIELDS if name not in document]
        if missing:
            raise CheckpointError(f"missing {', '.join(missing)}")
        seq, hash_, time = document["seq"], document["hash"], document["time"]
        key_id, signer, signature = document["key_id"], document["signer"], document["signature"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise CheckpointError('"seq" is not a sequence number')
        if not isinstance(hash_, str) or len(hash_) != _HASH_LENGTH:
            raise CheckpointError('"hash" is not a 64-digit hash')
        if not (key_id is None or isinstance(key_id, str)):
            raise CheckpointError('"key_id" is not a key id')
        if not isinstance(signer, str) or not isinstance(signature, str):
            raise CheckpointError('"signer" and "signature" must be strings')
        try:
            moment = datetime.fromisoformat(time) if isinstance(time, str) else None
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise CheckpointError('"time" is not an ISO 8601 time with a zone')
        return cls(seq, hash_, moment, key_id, signer, signature)


def signed_bytes(seq: int, hash_: str, time: datetime, key_id: str | None, signer: str) -> bytes:
    document = {
        "type": CHECKPOINT_TYPE,
        "seq": seq,
        "hash": hash_,
        "time": canonical_time(time),
        "key_id": key_id,
        "signer": signer,
    }
    return canonical_json(document).encode()


def signer_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class CheckpointSigner:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key = private_key.public_key()
        self.signer = signer_id(self.public_key)

    @classmethod
    def from_pem_file(cls, path: Path) -> CheckpointSigner:
        """`LKPS_AUDIT_SIGNING_KEY`: an unencrypted Ed25519 private key in PEM
        (`openssl genpkey -algorithm ed25519`)."""
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as error:
            raise ConfigurationError(
                f"LKPS_AUDIT_SIGNING_KEY {path} is not a readable PEM private key "
                f"({type(error).__name__})"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(f"LKPS_AUDIT_SIGNING_KEY {path} is not an Ed25519 key")
        return cls(key)

    def sign(self, seq: int, hash_: str, time: datetime, key_id: str | None) -> Checkpoint:
        signature = self._private_key.sign(signed_bytes(seq, hash_, time, key_id, self.signer))
        encoded = base64.urlsafe_b64encode(signature).decode().rstrip("=")
        return Checkpoint(seq, hash_, time, key_id, self.signer, encoded)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (`openssl pkey -pubout`); a private key's
    PEM gives its public key."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path} cannot be read ({type(error).__name__})") from None
    try:
        key: object = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError):
            raise CheckpointError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{path} is not an Ed25519 key")
    return key


def read_checkpoints(lines: Iterable[str], public_key: Ed25519PublicKey) -> dict[int, str]:
    """The signed head hash at each sequence number, from JSON lines (blank lines
    skipped). A line that does not parse or verify, or two checkpoints that disagree
    about one sequence number, raise `CheckpointError`: a forged or damaged checkpoint
    is itself a finding."""
    parsed: list[tuple[str, Checkpoint]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            parsed.append((f"line {number}", Checkpoint.from_json(json.loads(line))))
        except (json.JSONDecodeError, CheckpointError) as error:
            raise CheckpointError(f"checkpoint on line {number}: {error}") from None
    return signed_heads(parsed, public_key)


def signed_heads(
    checkpoints: Iterable[tuple[str, Checkpoint]], public_key: Ed25519PublicKey
) -> dict[int, str]:
    """Sequence number to signed hash, from (where, checkpoint) pairs; `CheckpointError`
    names the first checkpoint that does not verify or contradicts another."""
    signed: dict[int, str] = {}
    for where, checkpoint in checkpoints:
        if not checkpoint.verify(public_key):
            raise CheckpointError(f"checkpoint on {where}: signature does not verify")
        if signed.setdefault(checkpoint.seq, checkpoint.hash) != checkpoint.hash:
            raise CheckpointError(
                f"checkpoint on {where}: another checkpoint signed another hash "
                f"for record {checkpoint.seq}"
            )
    return signed


class Checkpointer:
    """Takes, stores, logs and serves this process's checkpoints."""

    def __init__(self, log: AuditLog, signer: CheckpointSigner, clock: Clock):
        self._log = log
        self._signer = signer
        self._clock = clock

    async def take(self) -> Checkpoint:
        """Sign the head as it is now, store it and write it to the log stream (logger
        `lkps.audit`, field `audit_checkpoint`)."""
        seq, hash_ = await self._log.head()
        key = self._log.key
        checkpoint = self._signer.sign(seq, hash_, self._clock.now(), key.key_id if key else None)
        await self._log.store_checkpoint(checkpoint.as_json() | {"time": checkpoint.time})
        records_log.info(
            "audit checkpoint at %d", seq, extra={"audit_checkpoint": checkpoint.as_json()}
        )
        return checkpoint

    async def latest(self, limit: int) -> list[Checkpoint]:
        return await self.stored(self._log, limit)

    async def signed_heads(self, limit: int = 100) -> dict[int, str]:
        """The newest stored checkpoints made with this signing key (any replica's), as
        `verify_chain` takes them. One that no longer verifies (changed in the store)
        raises `CheckpointError`; others' (an earlier signing key) are left out."""
        own = [c for c in await self.latest(limit) if c.signer == self._signer.signer]
        return signed_heads(((f"stored record {c.seq}", c) for c in own), self._signer.public_key)

    @staticmethod
    async def stored(log: AuditLog, limit: int) -> list[Checkpoint]:
        """The newest `limit` stored checkpoints (any replica's), newest first."""
        return [Checkpoint(**row) for row in await log.checkpoints(limit)]
