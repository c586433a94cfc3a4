"""Audit keys for tests: a non-dev LKPS needs an audit key and a checkpoint signing key."""

from __future__ import annotations

import functools
import hashlib
import secrets
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lkps.audit.keys import AuditKeys, parse_key


def new_audit_key() -> str:
    return secrets.token_urlsafe(32)


def audit_key_for(database_url: str) -> str:
    """The audit key of test servers on `database_url`: one per store, so that replicas
    sharing a store chain with one key and a test can verify what they wrote."""
    return hashlib.sha256(f"lkps-test-audit-key:{database_url}".encode()).hexdigest()


def audit_keys_for(database_url: str) -> AuditKeys:
    return AuditKeys(parse_key(audit_key_for(database_url), "test key"))


def write_signing_key(path: Path) -> Path:
    """A fresh Ed25519 private key in PEM at `path`, its public key beside it (`.pub`)."""
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_path(path).write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def public_path(signing_key: Path) -> Path:
    return signing_key.with_suffix(".pub")


@functools.cache
def shared_signing_key() -> Path:
    """One signing key for this test process (a fresh directory of its own), for servers
    started without a tmp_path at hand."""
    return write_signing_key(Path(tempfile.mkdtemp(prefix="lkps-audit-")) / "signing.pem")
