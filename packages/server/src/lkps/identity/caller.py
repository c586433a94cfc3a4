"""The verified caller, derived from an Entra access token's claims."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_CWID_UNSAFE = re.compile(r"[^A-Za-z0-9_.]")
_EMAIL_LIKE_CLAIMS = frozenset({"preferred_username", "upn"})


@dataclass(frozen=True, slots=True)
class Caller:
    tenant_id: str
    object_id: str
    client_app_id: str
    app_only: bool
    cwid: str
    name: str | None
    roles: frozenset[str]
    token_version: str

    @property
    def subject_key(self) -> str:
        """`tid`+`oid`: what access decisions and the audit key users on (contract §1)."""
        return f"{self.tenant_id}/{self.object_id}"


def sanitise_cwid(raw: str) -> str:
    """Reduce to `[A-Za-z0-9_.]`, the alphabet allowed in room names and identities."""
    return _CWID_UNSAFE.sub("_", raw)


def extract_cwid(claims: Mapping[str, Any], claim_order: Sequence[str]) -> str | None:
    """The first present claim of `claim_order`, as a display CWID."""
    for name in claim_order:
        value = claims.get(name)
        if not isinstance(value, str) or not value.strip():
            continue
        value = value.strip()
        if name in _EMAIL_LIKE_CLAIMS:
            value = value.split("@", 1)[0]
            if not value:
                continue
        return sanitise_cwid(value)
    return None


def is_app_only(claims: Mapping[str, Any]) -> bool:
    """Client-credentials token: `idtyp == "app"`, or no `scp` and `oid == sub`."""
    if claims.get("idtyp") == "app":
        return True
    oid = claims.get("oid")
    return "scp" not in claims and oid is not None and oid == claims.get("sub")


def client_app_id(claims: Mapping[str, Any]) -> str | None:
    """`azp` in v2 tokens, `appid` in v1 tokens."""
    value = claims.get("azp") if claims.get("ver") == "2.0" else claims.get("appid")
    if value is None:
        value = claims.get("azp") or claims.get("appid")
    return value.lower() if isinstance(value, str) and value else None
