"""Audit keys for tests: a non-dev LKPS needs an audit key and a checkpoint signing key."""

from __future__ import annotations

import functools
import secrets
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def new_audit_key() -> str:
    return secrets.token_urlsafe(32)


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
