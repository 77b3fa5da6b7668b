"""Assemble a consumer pool from settings: recommender, rate limiter, retries, breaker."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import redis.asyncio as aioredis

from consumer.breaker import CircuitBreaker
from consumer.names import consumer_name
from consumer.pool import ConsumerPool
from consumer.errors import InvalidRateLimitError
from consumer.guarded import STARTUP_WAIT_SECONDS
from consumer.ratelimit.base import COUNTING_MODES, RateLimitConfig, RateLimiter
from consumer.ratelimit.chain import LimiterChain
from consumer.ratelimit.redis_bucket import RedisTokenBucket
from consumer.recommenders.factory import make_recommender
from consumer.retry import RetryPolicy
from consumer.settings import ConsumerSettings
from consumer.transports import Transport
from consumer.transports.partitioned import PartitionedStreamTransport
from rewardpilot.orchestrator.api_key import read_api_key
from rewardpilot.streams import StreamKeys

# Bucket names under ``keys.rate_limit(name)``. `rewardpilot status` shows the orchestrator bucket.
ORCHESTRATOR_BUCKET = "orchestrator"
IN_PROCESS_BUCKET = "in-process"
# The settings of a replay's guest in the orchestrator bucket when the replay has no rate of its
# own. A guest uses the stored rate and burst, so only the default ratios and the expiry apply.
GUEST_CONFIG = RateLimitConfig(rate=1.0, burst=1)


@dataclass
class CallOptions:
    """How the pool calls its recommender.

    ``orchestrator_url`` None keeps the in-process engine. ``rate`` (such as
    ``100/min``) turns on a token bucket (``make_limiter`` says which); without
    it a live consumer's calls are not rate limited. The API key is read from
    ``ORCHESTRATOR_API_KEY``.
    ``startup_wait`` is the maximum number of seconds the pool waits at start
    for the orchestrator to respond before its workers read.
    """

    orchestrator_url: str | None = None
    rate: str | None = None
    burst: int = 10
    counting: str = "requests"
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
    timeout: float = 10.0
    concurrency: int = 16
    startup_wait: float = STARTUP_WAIT_SECONDS

    @classmethod
    def from_env(cls, **overrides) -> CallOptions:
        options = cls(orchestrator_url=os.environ.get("ORCHESTRATOR_URL") or None)
        for name, value in overrides.items():
            if value is not None:
                setattr(options, name, value)
        return options

    def check(self) -> None:
        """Raise InvalidRateLimitError when ``counting`` is not a counting mode, whether or not ``rate`` is set."""
        if self.counting not in COUNTING_MODES:
            raise InvalidRateLimitError(
                f"invalid counting mode {self.counting!r}: expected one of {', '.join(COUNTING_MODES)}"
            )


def build_pool(client: aioredis.Redis, settings: ConsumerSettings, options: CallOptions | None = None,
               *, transport: Transport | None = None, replay: bool = False) -> ConsumerPool:
    """Return a pool wired with the recommender, limiter, retry policy and breaker the options name.

    ``replay`` True makes the rate limit a replay's (see ``make_limiter``).
    Raises ``InvalidApiKeyError`` (a ValueError) for an orchestrator URL
    with an ``ORCHESTRATOR_API_KEY`` that no HTTP header can carry.
    """
    options = options or CallOptions()
    options.check()
    # The in-process engine takes no key, so a bad one only matters with an orchestrator.
    api_key = read_api_key("consumer") if options.orchestrator_url else None
    recommender = make_recommender(
        options.orchestrator_url, api_key=api_key or "", timeout=options.timeout, concurrency=options.concurrency,
    )

    limiter = make_limiter(client, settings, options, replay=replay)

    breaker = None
    if options.orchestrator_url:
        breaker = CircuitBreaker(options.breaker_threshold, options.breaker_cooldown)

    retry = RetryPolicy(max_attempts=options.max_attempts, base_delay=options.base_delay,
                        max_delay=max(options.max_delay, options.base_delay))
    if transport is None and settings.partitions > 1:
        settings, transport = partitioned(client, settings)
    pool = ConsumerPool(client, settings, recommender, limiter=limiter, breaker=breaker, retry=retry,
                        transport=transport)
    pool.recommender.startup_wait_seconds = options.startup_wait
    return pool


def make_limiter(client: aioredis.Redis, settings: ConsumerSettings, options: CallOptions, *,
                 replay: bool = False) -> RateLimiter | None:
    """Return the rate limiter of a pool's recommender calls, or None when they are not limited.

    A live consumer with ``options.rate`` writes that rate into a bucket
    shared by every consumer of the prefix. With an orchestrator that is
    the orchestrator bucket (``keys.rate_limit()``). With the in-process
    engine it is a separate ``in-process`` bucket, so that such a consumer
    never changes the rate of orchestrator calls.

    A replay never writes the rate of a shared bucket. Its ``options.rate``
    caps the replay alone, in a bucket keyed by its run (``replay_bucket_key``).
    With an orchestrator, it also takes tokens from the orchestrator bucket
    as a guest, at the rate the live consumers set, so that live and replay
    calls together stay under it.
    """
    config = None
    if options.rate:
        config = RateLimitConfig.from_options(options.rate, options.burst, options.counting)
        if config.counting == "transactions" and settings.batch_size > config.burst:
            raise ValueError(
                f"batch size {settings.batch_size} is larger than the burst {config.burst}, so a batch "
                "could never get its tokens when counting transactions; lower --batch-size or raise --burst"
            )

    if not replay:
        if config is None:
            return None
        name = ORCHESTRATOR_BUCKET if options.orchestrator_url else IN_PROCESS_BUCKET
        return RedisTokenBucket(client, config, keys=settings.keys, name=name)

    limiters: list[RateLimiter] = []
    if config is not None:
        limiters.append(RedisTokenBucket(client, config, key=replay_bucket_key(settings.keys, settings.run)))
    if options.orchestrator_url:
        limiters.append(RedisTokenBucket(client, config or GUEST_CONFIG, keys=settings.keys,
                                         name=ORCHESTRATOR_BUCKET, guest=True))
    if not limiters:
        return None
    return limiters[0] if len(limiters) == 1 else LimiterChain(limiters)


def replay_bucket_key(keys: StreamKeys, run: str) -> str:
    """Return the key of the bucket that caps replay run ``run`` alone."""
    return f"{keys.base}ratelimit:replay:{run}"


def partitioned(client: aioredis.Redis, settings: ConsumerSettings,
                ) -> tuple[ConsumerSettings, PartitionedStreamTransport]:
    """Return settings with a fixed consumer name and the partitioned transport for that name.

    The pool and the transport must use the same consumer name, because
    leases and pending entries are recorded under it.
    """
    settings = replace(settings, consumer=settings.consumer or consumer_name())
    return settings, PartitionedStreamTransport(client, settings, settings.consumer)
