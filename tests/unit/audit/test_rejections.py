"""Rejected tokens are recorded at a bounded rate: per source and kind once a window, and
at most so many a window in all, with a count of what was left out."""

from __future__ import annotations

import pytest

from lkps.audit.rejections import RejectionRate
from tests.conftest import FakeClock

pytestmark = pytest.mark.unit


def test_one_record_per_source_and_kind_a_window_then_the_count() -> None:
    clock = FakeClock()
    rate = RejectionRate(clock, window_seconds=60, per_window=100)
    assert rate.admit("198.51.100.1", "malformed token") == 0
    assert [rate.admit("198.51.100.1", "malformed token") for _ in range(5)] == [None] * 5
    # Another kind, or another source, is a pair of its own.
    assert rate.admit("198.51.100.1", "token has expired") == 0
    assert rate.admit("198.51.100.2", "malformed token") == 0
    clock.advance(60)
    assert rate.admit("198.51.100.1", "malformed token") == 5
    assert rate.admit("198.51.100.1", "malformed token") is None


def test_no_more_than_per_window_records_whatever_the_sources() -> None:
    clock = FakeClock()
    rate = RejectionRate(clock, window_seconds=60, per_window=10)
    admitted = [rate.admit(f"2001:db8::{n:x}", "malformed token") for n in range(1000)]
    assert sum(a is not None for a in admitted) == 10
    clock.advance(60)
    assert rate.admit("2001:db8::ffff", "malformed token") == 0


def test_memory_is_bounded_by_max_pairs() -> None:
    clock = FakeClock()
    rate = RejectionRate(clock, window_seconds=60, per_window=10**6, max_pairs=50)
    for n in range(5000):
        rate.admit(f"10.0.{n // 256}.{n % 256}", "malformed token")
    assert len(rate._pairs) == 50
