"""LKPS's own outbound HTTPS (the tenant's signing keys, Microsoft Graph)."""

from __future__ import annotations

import ssl
from pathlib import Path

from lkps.config import ConfigurationError


def outbound_tls(ca_bundle: Path | str | None) -> ssl.SSLContext:
    """The system's CAs, plus `ca_bundle` (LKPS_TLS_CA_BUNDLE) when set: a company's
    TLS-inspecting proxy or private CA, without replacing the public ones."""
    context = ssl.create_default_context()
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"LKPS_TLS_CA_BUNDLE is unusable: {exc}") from None
    return context
