"""The client address an audit record names.

Behind a trusted gateway (`LKPS_FORWARDED_ALLOW_IPS`), uvicorn's proxy-headers middleware
(`lkps serve`) takes the client's address from `X-Forwarded-For` as written, IP or not:
`not-an-ip`, `x"}{` or 3,000 characters would reach the audit's `client_ip` (at most 64
characters). An IP address is recorded in its normal form (`2001:db8::1`, not
`2001:DB8:0:0::1`; `::ffff:192.0.2.1` as `192.0.2.1`); anything else is recorded as such, marked: `invalid:` and at most 56
characters of it, each outside `[A-Za-z0-9._:-]` replaced by `_`.
"""

from __future__ import annotations

import ipaddress
import re

MAX_LENGTH = 64  # the audit column
INVALID = "invalid:"
_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


def recorded_client_ip(host: str | None) -> str | None:
    """`host` as the audit records it: a normalized IP address, or marked as no address."""
    if host is None:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        address = ""
    else:
        # An IPv4 client of a dual-stack socket is that IPv4 address.
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        address = str(mapped or ip)
    if address and len(address) <= MAX_LENGTH:  # an IPv6 zone id can be long
        return address
    return INVALID + _UNSAFE.sub("_", host[: MAX_LENGTH - len(INVALID)])
