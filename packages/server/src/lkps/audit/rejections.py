"""Rejected tokens are recorded at a bounded rate.

Every other attempt leaves a durable record, but an unauthenticated one can be sent by
anyone, as fast as they can: recorded one for one, 1,000 garbage tokens grew the store
and its WAL by 16.8 MB in 2.6 s. A rejected token grants nothing and changes nothing,
so the trail keeps, per source address and kind of failure, the first rejection of each
window, and the next record of that pair says how many went unrecorded in between
(`details.unrecorded_since_last`). On top of that, at most `per_window` such records are
written per window by this process, whatever the sources; each process bounds its own.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from lkps.clock import Clock
from lkps.metrics import AUDIT_REJECTIONS_UNRECORDED


@dataclass(slots=True)
class _Pair:
    window_started: float
    unrecorded: int = 0


class RejectionRate:
    def __init__(
        self,
        clock: Clock,
        *,
        window_seconds: float = 60.0,
        per_window: int = 300,
        max_pairs: int = 10_000,
    ) -> None:
        self._clock = clock
        self._window = window_seconds
        self._per_window = per_window
        self._max_pairs = max_pairs
        self._pairs: OrderedDict[tuple[str, str], _Pair] = OrderedDict()
        self._window_started = clock.monotonic()
        self._recorded_in_window = 0

    def admit(self, source: str | None, kind: str) -> int | None:
        """None: leave this rejection unrecorded (it is counted). Otherwise record it,
        saying how many of the pair's rejections went unrecorded before it."""
        now = self._clock.monotonic()
        if now - self._window_started >= self._window:
            self._window_started, self._recorded_in_window = now, 0
        key = (source or "-", kind)
        pair = self._pairs.get(key)
        if pair is not None:
            self._pairs.move_to_end(key)
            if now - pair.window_started < self._window or not self._has_room():
                pair.unrecorded += 1
                AUDIT_REJECTIONS_UNRECORDED.inc()
                return None
            unrecorded, pair.window_started, pair.unrecorded = pair.unrecorded, now, 0
        else:
            if not self._has_room():
                AUDIT_REJECTIONS_UNRECORDED.inc()
                return None
            unrecorded = 0
            self._pairs[key] = _Pair(now)
            if len(self._pairs) > self._max_pairs:
                self._pairs.popitem(last=False)
        self._recorded_in_window += 1
        return unrecorded

    def _has_room(self) -> bool:
        return self._recorded_in_window < self._per_window
