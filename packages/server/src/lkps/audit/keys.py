"""Audit keys: where the chain's HMAC keys come from, and their ids.

The current key (`LKPS_AUDIT_KEY`, or the file `LKPS_AUDIT_KEY_FILE` names) chains new
records; previous keys (`LKPS_AUDIT_PREVIOUS_KEY_FILES`) only verify the records they
chained, so a key is rotated by making the old one previous and giving a new one. A key
is at least 32 characters of text (e.g. `openssl rand -base64 32`), used as its UTF-8
bytes. Its id, which each record names, is the first 16 hex digits of a SHA-256 over a
label and the key: public, and no help in guessing the key.

In development (`LKPS_ENV=dev`) with no key given, the key is derived from the database
URL: stable across restarts and the same for `lkps audit verify`, and worth nothing as
a secret, which a dev instance does not need. Outside dev a key is required
(`Settings.check_servable`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from lkps.audit.chain import ChainKey
from lkps.config import ConfigurationError, Settings

MIN_KEY_LENGTH = 32
_KEY_ID_LABEL = b"lkps-audit-key-id\x00"
_DEV_KEY_LABEL = "lkps-dev-audit-key:"


@dataclass(frozen=True, slots=True)
class AuditKeys:
    """The key that chains new records, and every key that verifies old ones."""

    current: ChainKey
    previous: tuple[ChainKey, ...] = ()

    def by_id(self) -> dict[str, ChainKey]:
        return {key.key_id: key for key in (*self.previous, self.current)}


def chain_key(secret: bytes) -> ChainKey:
    key_id = hashlib.sha256(_KEY_ID_LABEL + secret).hexdigest()[:16]
    return ChainKey(key_id=key_id, secret=secret)


def parse_key(text: str, origin: str) -> ChainKey:
    """A key from its text (surrounding whitespace, such as a file's newline, ignored)."""
    secret = text.strip()
    if len(secret) < MIN_KEY_LENGTH:
        raise ConfigurationError(f"{origin} must be at least {MIN_KEY_LENGTH} characters")
    return chain_key(secret.encode())


def read_key_file(path: Path, origin: str) -> ChainKey:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(
            f"{origin} {path} cannot be read ({type(error).__name__})"
        ) from None
    return parse_key(text, f"{origin} {path}")


def dev_key(database_url: str) -> ChainKey:
    """A development instance's key when none is given: derived, not secret."""
    return chain_key(hashlib.sha256((_DEV_KEY_LABEL + database_url).encode()).hexdigest().encode())


def load_audit_keys(settings: Settings) -> AuditKeys | None:
    """The configured keys; the derived dev key in dev; None when no key is given
    outside dev (verifying then needs checkpoints, and serving is refused)."""
    given = settings.audit_key.get_secret_value()
    if given and settings.audit_key_file is not None:
        raise ConfigurationError("give LKPS_AUDIT_KEY or LKPS_AUDIT_KEY_FILE, not both")
    if given:
        current: ChainKey | None = parse_key(given, "LKPS_AUDIT_KEY")
    elif settings.audit_key_file is not None:
        current = read_key_file(settings.audit_key_file, "LKPS_AUDIT_KEY_FILE")
    elif settings.is_dev:
        current = dev_key(settings.database_url)
    else:
        current = None
    previous = tuple(
        read_key_file(path, "LKPS_AUDIT_PREVIOUS_KEY_FILES")
        for path in settings.audit_previous_key_files
    )
    if current is None:
        if previous:
            raise ConfigurationError("LKPS_AUDIT_PREVIOUS_KEY_FILES needs LKPS_AUDIT_KEY too")
        return None
    return AuditKeys(current, previous)
