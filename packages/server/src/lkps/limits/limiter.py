"""The limits LKPS applies, by name."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from lkps.errors import LKPSError
from lkps.limits.buckets import Bucket, BucketStore
from lkps.metrics import RATE_LIMITED


class Limit(StrEnum):
    SESSION_PER_CLIENT = "session_per_client"
    SESSION_PER_USER = "session_per_user"
    REGISTER_PER_AGENT = "register_per_agent"


class TooManyRequests(LKPSError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, limit: Limit, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            f"Too many requests; retry after {self.retry_after} seconds",
            reason=f"rate limit {limit} exceeded",
        )
        self.limit = limit

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


@dataclass(frozen=True, slots=True)
class LimitSettings:
    window_seconds: float
    session_per_client: int
    session_per_user: int
    register_per_agent: int


class RateLimiter:
    def __init__(self, store: BucketStore, settings: LimitSettings) -> None:
        self.store = store
        self._buckets = {
            Limit.SESSION_PER_CLIENT: settings.session_per_client,
            Limit.SESSION_PER_USER: settings.session_per_user,
            Limit.REGISTER_PER_AGENT: settings.register_per_agent,
        }
        self._window = settings.window_seconds
        self.hits: dict[Limit, int] = dict.fromkeys(Limit, 0)

    async def check(self, limit: Limit, key: str) -> None:
        """Take a token from `key`'s bucket for `limit`, or raise `TooManyRequests`.
        A limit of 0 is no limit."""
        capacity = self._buckets[limit]
        if capacity <= 0:
            return
        wait = await self.store.take(f"{limit}:{key}", Bucket(capacity, self._window))
        if wait > 0:
            self.hits[limit] += 1
            RATE_LIMITED.labels(str(limit)).inc()
            raise TooManyRequests(limit, wait)

    async def aclose(self) -> None:
        await self.store.aclose()
