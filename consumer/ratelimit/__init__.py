"""The shared rate limit on recommender calls: a token bucket in Redis that
every consumer process shares, adapting to 429s from the orchestrator, and
the chain of buckets a replay takes from."""

from consumer.ratelimit.base import (
    AcquireStopped,
    LimiterStats,
    Permit,
    RateLimitConfig,
    RateLimiter,
    parse_rate,
)
from consumer.ratelimit.chain import LimiterChain
from consumer.ratelimit.redis_bucket import BucketState, RedisTokenBucket, read_bucket_state

__all__ = [
    "AcquireStopped",
    "BucketState",
    "LimiterChain",
    "LimiterStats",
    "Permit",
    "RateLimitConfig",
    "RateLimiter",
    "RedisTokenBucket",
    "parse_rate",
    "read_bucket_state",
]
