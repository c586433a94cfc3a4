"""Token buckets held in this process.

A bucket of `capacity` tokens refills at `capacity / window` tokens a second: a client may
burst up to its whole allowance, then continues at the sustained rate, with no doubled
burst at window edges as fixed windows allow.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from lkps.clock import Clock


@dataclass(frozen=True, slots=True)
class Bucket:
    capacity: int
    window_seconds: float

    @property
    def rate(self) -> float:
        return self.capacity / self.window_seconds


class BucketStore(Protocol):
    async def take(self, key: str, bucket: Bucket) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is available."""
        ...

    async def aclose(self) -> None: ...


class LocalBuckets:
    """Buckets in memory, the least recently used dropped beyond `max_keys` (so that a
    stream of fresh keys cannot grow memory without bound)."""

    def __init__(self, clock: Clock, *, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def take(self, key: str, bucket: Bucket) -> float:
        now = self._clock.monotonic()
        tokens, last = self._state.pop(key, (float(bucket.capacity), now))
        tokens = min(float(bucket.capacity), tokens + (now - last) * bucket.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / bucket.rate
        self._state[key] = (tokens, now)
        while len(self._state) > self._max_keys:
            self._state.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._state)

    async def aclose(self) -> None:
        self._state.clear()
