"""Prometheus metrics of one consumer process (``rewardpilot consume --metrics-port``).

A custom collector reads the pool's counters when Prometheus scrapes, so the
hot path only increments plain integers and bucket counts (``PoolStats``).
The group's lag, pending count and oldest pending entry's age, and the
dead-letter stream's length, are read from Redis at scrape time with a
blocking client (``BacklogReader``). With ``--partitions``, the group gauges
cover every partition stream: lag and pending are sums, and the oldest
pending age is the maximum. These gauges describe the whole group, so they
carry ``stream`` and ``group`` labels but no ``consumer`` label, unlike the
counters and histograms. Orchestrator responses, REST or MCP, are counted
by HTTP status through an HTTP client response hook (``count_http_statuses``),
with the REST recommender's GET /health checks in a counter of their own.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import redis
from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from consumer.group import _find_group, _lag_of
from consumer.recommenders.http import HEALTH_PATH
from consumer.recovery import group_streams
from rewardpilot.connection import connect, redact
from rewardpilot.logs import RepeatFilter, get_logger

if TYPE_CHECKING:
    from consumer.pool import ConsumerPool
    from consumer.stats import Buckets, PoolStats

PREFIX = "rewardpilot_consumer"

# Seconds a scrape waits for each Redis reply before it leaves out the backlog gauges.
BACKLOG_SOCKET_TIMEOUT_SECONDS = 2.0
# A failing backlog read is logged at most once per this many seconds, with the count of the ones left out.
BACKLOG_WARNING_INTERVAL_SECONDS = 60.0

# A host name label as RFC 1123 allows it: letters, digits and inner hyphens, at most 63 characters.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class PoolCollector(Collector):
    """Exposes a pool's counters, its limiter's effective rate and its group's backlog."""

    def __init__(self, pool: ConsumerPool, redis_url: str | None = None):
        self.pool = pool
        self.backlog = BacklogReader(pool, redis_url) if redis_url else None

    def collect(self):
        stats = self.pool.stats
        labels = ["consumer", "group"]
        values = [self.pool.name, self.pool.group]

        counters = [
            ("transactions_processed", "Results published.", stats.results),
            ("transactions_failed", "Entries sent to the dead-letter stream.", stats.dead_letters),
            ("transactions_duplicate", "Entries skipped because their transaction_id already had an outcome in this "
             "run: redelivered, or published again.", stats.duplicates),
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

        calls = CounterMetricFamily(
            f"{PREFIX}_orchestrator_calls",
            "Orchestrator HTTP responses by status code, one per request: the REST POST /recommend and "
            "/recommend/batch requests, or every request of an MCP session (initialize, tool calls, the ping "
            "probe). GET /health checks are counted in orchestrator_health_checks_total instead.",
            labels=[*labels, "status"],
        )
        for status, count in sorted(stats.http_statuses.items()):
            calls.add_metric([*values, str(status)], count)
        yield calls

        health_checks = CounterMetricFamily(
            f"{PREFIX}_orchestrator_health_checks",
            "Responses to the REST recommender's GET /health checks by status code: read before its first "
            "recommend request, and again until one returns a status other than 5xx.",
            labels=[*labels, "status"],
        )
        for status, count in sorted(stats.health_check_statuses.items()):
            health_checks.add_metric([*values, str(status)], count)
        yield health_checks

        limiter = self.pool.recommender.limiter
        if limiter is not None:
            rate = GaugeMetricFamily(f"{PREFIX}_effective_rate", "Effective shared rate, tokens per second.",
                                     labels=labels)
            rate.add_metric(values, limiter.effective_rate())
            yield rate

        yield from self._backlog()

    def _backlog(self):
        """Yield the gauges read from Redis, labelled by stream (and group) but not by consumer.

        Every consumer of a group reads and exports the same values, so a
        per-consumer label would only invite ``sum``, which multiplies them.
        """
        if self.backlog is None:
            return
        reading = self.backlog.read()
        if reading is None:
            return
        if reading.group_found:
            aggregation_note = (" Every consumer of the group exports the same value, so aggregate with "
                            "max by (stream, group), not sum.")
            group_gauges = [
                ("group_lag", "Entries the consumer group has not read yet (with partitions, the sum over them): "
                 "0 once it has read the stream's last entry, whatever XINFO GROUPS reports, and 1 for a stream "
                 "whose unread entries Redis cannot count after XDEL or trimming." + aggregation_note, reading.lag),
                ("group_pending", "Entries delivered but not acknowledged (with partitions, the sum over them)."
                 + aggregation_note, reading.pending),
                ("group_oldest_pending_seconds",
                 "Age of the oldest pending entry from its stream id time (with partitions, the maximum), "
                 "or 0 when none is pending." + aggregation_note,
                 reading.oldest_pending_seconds),
            ]
            for name, documentation, value in group_gauges:
                family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=["stream", "group"])
                family.add_metric([self.pool.stream, self.pool.group], value)
                yield family
        dead_letters = GaugeMetricFamily(
            f"{PREFIX}_dead_letters",
            "Entries in the dead-letter stream of the prefix (all runs and consumers). Every consumer under the "
            "prefix exports the same value, so aggregate with max by (stream), not sum.",
            labels=["stream"],
        )
        dead_letters.add_metric([self.pool.keys.dead_letters], reading.dead_letters)
        yield dead_letters


@dataclass
class BacklogReading:
    """The group's backlog over every stream the pool reads, and the dead-letter stream's length."""

    group_found: bool = False  # whether the group exists on at least one of the streams
    lag: int = 0
    pending: int = 0
    oldest_pending_seconds: float = 0.0
    dead_letters: int = 0


class BacklogReader:
    """Reads a pool's backlog from Redis at scrape time, with the connection settings of the CLI.

    The client comes from ``rewardpilot.connection.connect``, so it sends
    ``REDIS_PASSWORD`` like the consumer's own client. A failing read is logged
    as a warning, at most once per ``BACKLOG_WARNING_INTERVAL_SECONDS``.
    """

    def __init__(self, pool: ConsumerPool, redis_url: str):
        self.pool = pool
        self.url = redact(redis_url)
        self.client = connect(redis_url, socket_timeout=BACKLOG_SOCKET_TIMEOUT_SECONDS)
        self.log = get_logger("metrics", consumer=pool.name, group=pool.group)
        self._repeats = RepeatFilter(BACKLOG_WARNING_INTERVAL_SECONDS)

    def read(self) -> BacklogReading | None:
        """Return the backlog, or None after logging why Redis could not be read."""
        try:
            return self._read()
        except redis.RedisError as exc:
            allowed, suppressed = self._repeats.allow("backlog")
            if allowed:
                self.log.warning("metrics: reading the group backlog from Redis failed; the scrape leaves out "
                                 "the backlog gauges", url=self.url, error=str(exc), suppressed=suppressed)
            return None

    def _read(self) -> BacklogReading:
        reading = BacklogReading()
        seconds, micros = self.client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        for stream in group_streams(self.pool):
            try:
                groups = self.client.xinfo_groups(stream)
            except redis.ResponseError as exc:
                if "no such key" in str(exc).lower():
                    continue  # a partition stream that no entry has reached yet
                raise
            info = _find_group(groups, self.pool.group)
            if info is None:
                continue
            reading.group_found = True
            # A lag above 0 or unknown may be stale, which only the stream's last id shows (see group_lag).
            stream_info = self.client.xinfo_stream(stream) if info.get("lag") != 0 else None
            reading.lag += _lag_of(info, stream_info)
            pending = int(info.get("pending", 0))
            reading.pending += pending
            if pending:
                oldest = self.client.xpending_range(stream, self.pool.group, min="-", max="+", count=1)
                if oldest:
                    age_ms = max(0, now_ms - _entry_time_ms(oldest[0]["message_id"]))
                    reading.oldest_pending_seconds = max(reading.oldest_pending_seconds, age_ms / 1000)
        reading.dead_letters = self.client.xlen(self.pool.keys.dead_letters)
        return reading


def _entry_time_ms(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


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
    """Count each orchestrator response by HTTP status into ``stats``.

    Responses to GET /health go to ``stats.health_check_statuses``, every
    other response to ``stats.http_statuses``, so the latter counts the
    recommend requests. Takes the recommender itself or the pool's guard
    around it. An ``HttpRecommender`` gets a response hook on its httpx
    client. An ``McpRecommender`` gets one through ``add_response_hook``,
    so every HTTP request of its MCP sessions is counted: initialize, tool
    calls and the auth probe. Returns whether the recommender makes HTTP calls.
    NOTE: a call that fails before any response (refused connection, timeout)
    has no status, so it is not counted here; the retries counter shows it.
    """
    inner = getattr(recommender, "recommender", recommender)

    async def count(response) -> None:
        request = response.request
        if request.method == "GET" and request.url.path.endswith(HEALTH_PATH):
            stats.health_check_statuses[response.status_code] += 1
        else:
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
