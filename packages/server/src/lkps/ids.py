"""The one accepted spelling of a UUID in LKPS's interface: agent, client and
registration ids alike.

The canonical hyphenated form (RFC 9562, `8-4-4-4-12` hex digits), in either case, and
nothing else: Python's `uuid.UUID` would also take braces, a `urn:uuid:` prefix or no
hyphens, so two endpoints built on it and on a pattern disagreed on what an agent id is.
Ids are stored and compared in lower case.
"""

from __future__ import annotations

import re

UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_UUID = re.compile(UUID_PATTERN)


def canonical_uuid(value: object) -> str | None:
    """`value` in lower case when it is a UUID in the accepted spelling, else None.
    (`fullmatch`: the pattern's `$` alone would let a trailing newline through.)"""
    if isinstance(value, str) and _UUID.fullmatch(value) is not None:
        return value.lower()
    return None
