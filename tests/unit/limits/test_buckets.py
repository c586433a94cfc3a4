from __future__ import annotations

import pytest

from lkps.limits import Bucket, LocalBuckets, RateLimiter, TooManyRequests
from lkps.limits.limiter import Limit, LimitSettings
from lkps.limits.redis import RedisBuckets
from tests.conftest import FakeClock

pytestmark = pytest.mark.unit


async def test_bucket_allows_a_burst_then_the_sustained_rate(clock: FakeClock) -> None:
    buckets = LocalBuckets(clock)
    bucket = Bucket(capacity=10, window_seconds=10)  # 1 token a second
    assert [await buckets.take("k", bucket) for _ in range(10)] == [0.0] * 10
    assert await buckets.take("k", bucket) == pytest.approx(1.0)
    clock.advance(0.5)
    assert await buckets.take("k", bucket) == pytest.approx(0.5)
    clock.advance(0.5)
    assert await buckets.take("k", bucket) == 0.0
    clock.advance(1000)
    assert [await buckets.take("k", bucket) for _ in range(10)] == [
        0.0
    ] * 10  # never above capacity


async def test_keys_are_independent_and_memory_is_bounded(clock: FakeClock) -> None:
    buckets = LocalBuckets(clock, max_keys=100)
    bucket = Bucket(capacity=1, window_seconds=60)
    for i in range(1000):
        assert await buckets.take(f"key-{i}", bucket) == 0.0
    assert len(buckets) == 100


async def test_limiter_names_the_limit_and_rounds_retry_after_up(clock: FakeClock) -> None:
    limiter = RateLimiter(LocalBuckets(clock), LimitSettings(60, 0, 1, 0))
    await limiter.check(Limit.SESSION_PER_USER, "u")
    with pytest.raises(TooManyRequests) as refused:
        await limiter.check(Limit.SESSION_PER_USER, "u")
    assert refused.value.retry_after == 60
    assert refused.value.headers() == {"Retry-After": "60"}
    assert limiter.hits[Limit.SESSION_PER_USER] == 1
    for _ in range(100):
        await limiter.check(Limit.SESSION_PER_CLIENT, "c")  # 0: unlimited


async def test_redis_down_falls_back_to_local_buckets(clock: FakeClock) -> None:
    store = RedisBuckets.from_url("redis://127.0.0.1:9/0", LocalBuckets(clock))
    bucket = Bucket(capacity=2, window_seconds=60)
    waits = [await store.take("k", bucket) for _ in range(3)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2] > 0  # still limited, by this replica alone
    assert store.failures == 3
    await store.aclose()
