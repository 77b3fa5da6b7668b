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
from consumer.ratelimit.base import COUNTING_MODES, RateLimitConfig
from consumer.ratelimit.redis_bucket import RedisTokenBucket
from consumer.recommenders.factory import make_recommender
from consumer.retry import RetryPolicy
from consumer.settings import ConsumerSettings
from consumer.transports import Transport
from consumer.transports.partitioned import PartitionedStreamTransport
from rewardpilot.orchestrator.api_key import read_api_key


@dataclass
class CallOptions:
    """How the pool calls its recommender.

    ``orchestrator_url`` None keeps the in-process engine. ``rate`` (such as
    ``100/min``) turns on the shared token bucket; without it calls are not
    rate limited. The API key is read from ``ORCHESTRATOR_API_KEY``.
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
               *, transport: Transport | None = None) -> ConsumerPool:
    """Return a pool wired with the recommender, limiter, retry policy and breaker the options name.

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

    limiter = None
    if options.rate:
        config = RateLimitConfig.from_options(options.rate, options.burst, options.counting)
        if config.counting == "transactions" and settings.batch_size > config.burst:
            raise ValueError(
                f"batch size {settings.batch_size} is larger than the burst {config.burst}, so a batch "
                "could never get its tokens when counting transactions; lower --batch-size or raise --burst"
            )
        limiter = RedisTokenBucket(client, config, keys=settings.keys)

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


def partitioned(client: aioredis.Redis, settings: ConsumerSettings,
                ) -> tuple[ConsumerSettings, PartitionedStreamTransport]:
    """Return settings with a fixed consumer name and the partitioned transport for that name.

    The pool and the transport must use the same consumer name, because
    leases and pending entries are recorded under it.
    """
    settings = replace(settings, consumer=settings.consumer or consumer_name())
    return settings, PartitionedStreamTransport(client, settings, settings.consumer)
