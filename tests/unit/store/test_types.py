"""The store's portable column types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Dialect
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql.base import PGDialect

from lkps.store.types import ESCAPE, PortableText, UTCDateTime, escape_nul, unescape_nul

pytestmark = pytest.mark.unit

CHARACTERS = st.text(alphabet=st.sampled_from(["\x00", ESCAPE, "0", "e", "a", "\\", "é"]))


@given(st.one_of(CHARACTERS, st.text()))
def test_escaping_round_trips_and_leaves_no_nul(value: str) -> None:
    escaped = escape_nul(value)
    assert "\x00" not in escaped
    assert unescape_nul(escaped) == value


@given(CHARACTERS, CHARACTERS)
def test_escaping_keeps_equality(a: str, b: str) -> None:
    assert (escape_nul(a) == escape_nul(b)) == (a == b)


def test_text_without_nul_or_escape_is_stored_as_is() -> None:
    assert escape_nul("alice@example.com") == "alice@example.com"


def test_sqlite_values_are_never_escaped() -> None:
    column = PortableText()
    lite: Dialect = sqlite.dialect()
    pg: Dialect = PGDialect()  # type: ignore[no-untyped-call]
    assert column.process_bind_param("a\x00", lite) == "a\x00"
    assert column.process_bind_param("a\x00", pg) == f"a{ESCAPE}0"
    assert column.process_result_value(f"a{ESCAPE}0", lite) == f"a{ESCAPE}0"
    assert column.process_result_value(f"a{ESCAPE}0", pg) == "a\x00"


def test_datetimes_are_stored_in_utc() -> None:
    moment = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    stored = UTCDateTime().process_bind_param(moment, sqlite.dialect())
    assert stored == datetime(2026, 11, 23, 10, 0, 0, 123456)
    assert UTCDateTime().process_result_value(stored, sqlite.dialect()) == moment.astimezone(UTC)
    with pytest.raises(ValueError, match="naive"):
        UTCDateTime().process_bind_param(datetime(2026, 11, 23), sqlite.dialect())
