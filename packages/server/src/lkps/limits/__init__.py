"""Rate limits: token buckets per client app and per user on session start, per agent on
registration. Local to the process by default; shared across replicas through Redis when
LKPS_REDIS_URL is set, falling back to the local buckets while Redis is unreachable."""

from lkps.limits.buckets import Bucket, LocalBuckets
from lkps.limits.limiter import RateLimiter, TooManyRequests

__all__ = ["Bucket", "LocalBuckets", "RateLimiter", "TooManyRequests"]
