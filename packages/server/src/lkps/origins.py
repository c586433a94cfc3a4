"""The browser origins LKPS answers with CORS headers (`LKPS_CORS_ALLOW_ORIGINS`).

An origin is what a browser sends in `Origin`: `scheme://host[:port]`, lower case, the
scheme's default port left out. Configured entries must be written exactly so, since a
browser's `Origin` is compared with them byte for byte: a trailing slash or `:443` would
otherwise be an entry that silently never matches.

Outside development the list holds exact origins only. Requests to LKPS carry a bearer
token for a signed-in user, so "any page may call it from a user's browser" (`*`) is a
decision no production instance should take by accident. `lkps dev` also accepts `*`
and `scheme://host:*` (that host on any port: the ports of local development servers
change from run to run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

ANY_ORIGIN = "*"
_ANY_PORT = ":*"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_PORT_DIGITS = 5


@dataclass(frozen=True)
class AllowedOrigins:
    """Which `Origin` values get CORS headers. Empty (false) when none does."""

    exact: frozenset[bytes] = frozenset()
    # `scheme://host` of each `scheme://host:*` entry: that origin on any port.
    any_port: tuple[bytes, ...] = ()
    any_origin: bool = False

    def __bool__(self) -> bool:
        return bool(self.exact or self.any_port or self.any_origin)

    def allows(self, origin: bytes) -> bool:
        """Whether `origin` (the raw `Origin` header) is allowed: an exact match, or one
        of the any-port hosts followed by nothing or `:` and a port number."""
        if origin in self.exact or self.any_origin:
            return True
        for host in self.any_port:
            if origin == host:
                return True
            if origin.startswith(host) and origin[len(host) : len(host) + 1] == b":":
                port = origin[len(host) + 1 :]
                if port.isdigit() and len(port) <= _MAX_PORT_DIGITS:
                    return True
        return False


def parse_origins(entries: Sequence[str], *, dev: bool) -> tuple[AllowedOrigins, list[str]]:
    """The allowed origins `entries` name, and the problems with them (each naming
    `LKPS_CORS_ALLOW_ORIGINS` and the fix). Wildcards are problems unless `dev`."""
    exact: set[bytes] = set()
    any_port: list[bytes] = []
    any_origin = False
    problems: list[str] = []
    for entry in entries:
        if entry == ANY_ORIGIN:
            if dev:
                any_origin = True
            else:
                problems.append(
                    "LKPS_CORS_ALLOW_ORIGINS=* is only accepted with LKPS_ENV=dev: requests "
                    "carry users' tokens, so name each browser origin allowed to send them"
                )
            continue
        wildcard = entry.endswith(_ANY_PORT)
        origin = entry.removesuffix(_ANY_PORT) if wildcard else entry
        canonical = _canonical_origin(origin, keep_port=not wildcard)
        if canonical != origin:
            hint = f"; write it as {canonical}{_ANY_PORT if wildcard else ''}" if canonical else ""
            problems.append(
                f"LKPS_CORS_ALLOW_ORIGINS: {entry!r} is not an origin "
                f"(scheme://host[:port], http or https, lower case, no path){hint}"
            )
        elif wildcard and not dev:
            problems.append(
                f"LKPS_CORS_ALLOW_ORIGINS: {entry!r} (any port) is only accepted with "
                "LKPS_ENV=dev; name each origin exactly"
            )
        elif wildcard:
            any_port.append(origin.encode("latin-1"))
        else:
            exact.add(origin.encode("latin-1"))
    allowed = AllowedOrigins(frozenset(exact), tuple(any_port), any_origin)
    return allowed, problems


def _canonical_origin(text: str, *, keep_port: bool) -> str:
    """`text` serialized as a browser serializes an origin; "" when it cannot be one."""
    if not text.isascii() or any(char.isspace() for char in text):
        return ""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return ""
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return ""
    if ":" in host:
        host = f"[{host}]"
    if keep_port and port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}"


def origin_of(host: str, port: int) -> str:
    """The origin of `http://host:port`, as a browser writes it."""
    if ":" in host:
        host = f"[{host}]"
    return _canonical_origin(f"http://{host}:{port}", keep_port=True)
