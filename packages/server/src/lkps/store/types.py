"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, String, Text
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, with microseconds intact on both engines.

    SQLite has no time zones and hands back naive values; the audit hash chain needs the
    value read back to be exactly the one written.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# PostgreSQL refuses NUL in text values, which SQLite stores; a version string or a
# claim carrying one would turn into a 503 there. On PostgreSQL, text is therefore
# escaped with a private-use character: NUL as ESCAPE + "0", ESCAPE itself as
# ESCAPE + "e". Values read back (and audit hashes) are exactly the ones written, and
# equality filters match because their parameters are escaped the same way.
ESCAPE = "\ue000"
_ESCAPED = re.compile(f"{ESCAPE}([0e])")


def escape_nul(value: str) -> str:
    if "\x00" not in value and ESCAPE not in value:
        return value
    return value.replace(ESCAPE, f"{ESCAPE}e").replace("\x00", f"{ESCAPE}0")


def unescape_nul(value: str) -> str:
    if ESCAPE not in value:
        return value
    return _ESCAPED.sub(lambda match: "\x00" if match[1] == "0" else ESCAPE, value)


class _PortableText(TypeDecorator[str]):
    def process_bind_param(self, value: str | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "postgresql":
            return value
        return escape_nul(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None or dialect.name != "postgresql":
            return value  # type: ignore[no-any-return]
        return unescape_nul(value)


class PortableString(_PortableText):
    """VARCHAR(n) that stores any Python str, NUL included, on both engines."""

    impl = String
    cache_ok = True


class PortableText(_PortableText):
    """TEXT that stores any Python str, NUL included, on both engines."""

    impl = Text
    cache_ok = True
