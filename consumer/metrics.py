"""Prometheus metrics of one consumer process (``rewardpilot consume --metrics-port``).

A custom collector reads the pool's counters when Prometheus scrapes, so the
hot path only increments plain integers and bucket counts (``PoolStats``).
Group lag and pending count are read from Redis at scrape time with a
blocking client. Orchestrator responses, REST or MCP, are counted by HTTP
status through an HTTP client response hook (``count_http_statuses``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import TYPE_CHECKING

import httpx
import redis
from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from consumer.group import _find_group, _lag_of

if TYPE_CHECKING:
    from consumer.pool import ConsumerPool
    from consumer.stats import Buckets, PoolStats

PREFIX = "rewardpilot_consumer"

# A host name label as RFC 1123 allows it: letters, digits and inner hyphens, at most 63 characters.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


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
            ("recommender_calls", "Recommender calls made: one per micro-batch and attempt, however many HTTP requests it took.",
             stats.recommender_calls),
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

        yield from _histograms(stats, labels, values)

        calls = CounterMetricFamily(f"{PREFIX}_orchestrator_calls", "Orchestrator HTTP responses by status code.",
                                    labels=[*labels, "status"])
        for status, count in sorted(stats.http_statuses.items()):
            calls.add_metric([*values, str(status)], count)
        yield calls

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


def _histograms(stats: PoolStats, labels: list[str], values: list[str]):
    histograms = [
        ("batch_size", "Entries per micro-batch read.", stats.batch_sizes),
        ("batch_seconds", "Seconds from reading a micro-batch to settling it.", stats.batch_seconds),
        ("publish_to_result_seconds", "Seconds from an entry's stream id time to its result's completed_at.",
         stats.latency_seconds),
    ]
    for name, documentation, buckets in histograms:
        yield _histogram(f"{PREFIX}_{name}", documentation, buckets, labels, values)


def _histogram(name: str, documentation: str, buckets: Buckets, labels: list[str], values: list[str]):
    family = HistogramMetricFamily(name, documentation, labels=labels)
    family.add_metric(values, buckets.cumulative(), sum_value=buckets.total)
    return family


def count_http_statuses(recommender, stats: PoolStats) -> bool:
    """Count each orchestrator response by HTTP status into ``stats.http_statuses``.

    Takes the recommender itself or the pool's guard around it. An
    ``HttpRecommender`` gets a response hook on its httpx client. An
    ``McpRecommender`` gets one through ``add_response_hook``, so every HTTP
    request of its MCP sessions is counted: initialize, tool calls and the
    auth probe. Returns whether the recommender makes HTTP calls.
    NOTE: a call that fails before any response (refused connection, timeout)
    has no status, so it is not counted here; the retries counter shows it.
    """
    inner = getattr(recommender, "recommender", recommender)

    async def count(response) -> None:
        stats.http_statuses[response.status_code] += 1

    add_response_hook = getattr(inner, "add_response_hook", None)
    if callable(add_response_hook):
        add_response_hook(count)
        return True

    client = getattr(inner, "_client", None)
    if not isinstance(client, httpx.AsyncClient):
        return False
    client.event_hooks["response"].append(count)
    return True


def check_listen_address(address: str) -> None:
    """Raise ValueError when ``address`` is neither an IP address nor a host name that resolves.

    A dotted name whose last label is all digits, such as ``0.0.0.0.0``, is
    a mistyped IPv4 address (a top-level domain is never all digits), so it is
    rejected without a DNS lookup. Other well-formed host names are resolved.
    """
    try:
        ipaddress.ip_address(address)
        return
    except ValueError:
        pass
    labels = address.removesuffix(".").split(".")
    if labels[-1].isdigit():
        raise ValueError("invalid address: it is neither an IPv4 address (four numbers from 0 to 255, such as "
                         "127.0.0.1) nor a host name")
    if len(address) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("invalid address: it is neither an IP address nor a host name; use an IP address of "
                         "this host, such as 127.0.0.1, or 0.0.0.0 for every interface")
    try:
        socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"invalid address: the host name does not resolve ({exc.strerror}); use an IP address "
                         "of this host, such as 127.0.0.1") from None


def serve_metrics(pool: ConsumerPool, port: int, *, redis_url: str | None = None,
                  address: str = "127.0.0.1") -> PoolCollector:
    """Register the pool's collector and serve /metrics on ``address:port``.

    Raises ValueError for an invalid ``address`` and OSError when the server cannot listen.
    """
    check_listen_address(address)
    collector = PoolCollector(pool, redis_url)
    count_http_statuses(pool.recommender, pool.stats)
    REGISTRY.register(collector)
    start_http_server(port, addr=address)
    return collector
