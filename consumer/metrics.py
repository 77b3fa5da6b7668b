"""Prometheus metrics of one consumer process (``rewardpilot consume --metrics-port``).

A custom collector reads the pool's counters when Prometheus scrapes, so the
hot path only increments plain integers. Group lag and pending count are read
from Redis at scrape time with a blocking client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis
from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from consumer.group import _find_group, _lag_of

if TYPE_CHECKING:
    from consumer.pool import ConsumerPool

PREFIX = "rewardpilot_consumer"


class PoolCollector(Collector):
    """Exposes a pool's counters, its limiter's effective rate and its group's backlog."""

    def __init__(self, pool: ConsumerPool, redis_url: str | None = None):
        self.pool = pool
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=2.0) if redis_url else None

    def collect(self):
        stats = self.pool.stats
        labels = ["consumer", "group"]
        values = [self.pool.name, self.pool.group]

        counters = [
            ("transactions_processed", "Results published.", stats.results),
            ("transactions_failed", "Entries sent to the dead-letter stream.", stats.dead_letters),
            ("transactions_duplicate", "Redelivered entries whose transaction already had an outcome.", stats.duplicates),
            ("retries", "Recommender calls retried after a transient failure.", stats.retries),
            ("recommender_calls", "Recommender calls made.", stats.recommender_calls),
            ("batches", "Micro-batches handled.", stats.batches),
            ("claimed", "Stale pending entries claimed from other consumers.", stats.claimed),
            ("rate_limit_waits", "Recommender calls that waited for a token.", stats.rate_limit_waits),
            ("rate_limit_wait_seconds", "Seconds spent waiting for tokens.", stats.rate_limit_wait_seconds),
            ("breaker_openings", "Times the circuit breaker opened.", stats.breaker_openings),
        ]
        for name, documentation, value in counters:
            family = CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=labels)
            family.add_metric(values, value)
            yield family

        limiter = self.pool.recommender.limiter
        if limiter is not None:
            rate = GaugeMetricFamily(f"{PREFIX}_effective_rate", "Effective shared rate, tokens per second.",
                                     labels=labels)
            rate.add_metric(values, limiter.effective_rate())
            yield rate

        yield from self._backlog(labels, values)

    def _backlog(self, labels, values):
        if self.redis is None:
            return
        try:
            groups = self.redis.xinfo_groups(self.pool.stream)
        except redis.RedisError:
            return
        info = _find_group(groups, self.pool.group)
        if info is None:
            return
        lag = GaugeMetricFamily(f"{PREFIX}_group_lag", "Entries the consumer group has not read yet.", labels=labels)
        lag.add_metric(values, _lag_of(info, None))
        pending = GaugeMetricFamily(f"{PREFIX}_group_pending", "Entries delivered but not acknowledged.",
                                    labels=labels)
        pending.add_metric(values, int(info.get("pending", 0)))
        yield lag
        yield pending


def serve_metrics(pool: ConsumerPool, port: int, *, redis_url: str | None = None,
                  address: str = "127.0.0.1") -> PoolCollector:
    """Register the pool's collector and serve /metrics on ``address:port``."""
    collector = PoolCollector(pool, redis_url)
    REGISTRY.register(collector)
    start_http_server(port, addr=address)
    return collector
