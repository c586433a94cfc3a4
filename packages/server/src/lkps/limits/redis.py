"""Token buckets in Redis, so that N replicas enforce one limit rather than N.

One Lua script per take: read, refill, take and write atomically, on Redis's own clock
(`TIME`), so replicas with skewed clocks still agree. Keys expire once a bucket would be
full again, so idle clients cost nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from lkps.limits.buckets import Bucket, LocalBuckets

log = logging.getLogger(__name__)

_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return tostring(wait)
"""


class RedisBuckets:
    def __init__(self, client: Redis, fallback: LocalBuckets, *, prefix: str = "lkps:rl:") -> None:
        self._redis = client
        self._fallback = fallback
        self._prefix = prefix
        self._take: Any = client.register_script(_TAKE)
        self.failures = 0

    @classmethod
    def from_url(
        cls, url: str, fallback: LocalBuckets, *, prefix: str = "lkps:rl:"
    ) -> RedisBuckets:
        client = Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        return cls(client, fallback, prefix=prefix)

    async def take(self, key: str, bucket: Bucket) -> float:
        try:
            wait = await self._take(keys=[self._prefix + key], args=[bucket.capacity, bucket.rate])
        except (RedisError, OSError) as exc:
            # Limits are abuse protection, not authorization: keep limiting, per replica.
            self.failures += 1
            if self.failures == 1 or self.failures % 1000 == 0:
                log.warning(
                    "Redis unavailable for rate limits; limiting per replica",
                    extra={"error": type(exc).__name__, "failures": self.failures},
                )
            return await self._fallback.take(key, bucket)
        return float(wait)

    async def aclose(self) -> None:
        await self._redis.aclose()
