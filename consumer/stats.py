"""Counters of one consumer process, read by the run summary, the logs and the metrics."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from rewardpilot.money import usd_text

# Up to the largest --batch-size, 10,000.
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 200, 500, 1000, 2000, 5000, 10_000)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Publish-to-result latency goes on to an hour, so results held up by an outage of minutes get a bucket.
LATENCY_BUCKETS = (*SECONDS_BUCKETS, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class Buckets:
    """Observations counted into histogram buckets, as Prometheus histograms count them.

    ``counts[i]`` is the number of observations at most ``bounds[i]`` and
    above the bound before it; the last count is for values above every
    bound. ``observe`` costs one binary search, so the hot path can afford it.
    """

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """Return (upper bound, observations at or below it) pairs ending with "+Inf"."""
        pairs = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            running += count
            pairs.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return pairs


@dataclass
class PoolStats:
    """What a consumer process has done since it started."""

    started: float = field(default_factory=time.monotonic)
    batches: int = 0
    delivered: int = 0
    past_end: int = 0  # delivered after a replay's end id, acknowledged without an outcome
    results: int = 0
    duplicates: int = 0
    # Duplicates whose marker names another entry, because the stream contains their transaction_id more than once.
    repeated_transaction_ids: int = 0
    dead_letters: int = 0
    retries: int = 0
    recommender_calls: int = 0
    claimed: int = 0
    rate_limit_waits: int = 0
    rate_limit_wait_seconds: float = 0.0
    breaker_openings: int = 0
    cap_conflicts: int = 0
    # Starts at 0.00, so a pool that wrote no result still reports "0.00" like every other money value.
    total_rewards_usd: Decimal = Decimal("0.00")
    first_result_at: float | None = None
    last_result_at: float | None = None
    # time.monotonic() after the last settle that recorded a result, a duplicate or a dead letter.
    last_settled_at: float | None = None
    batch_sizes: Buckets = field(default_factory=lambda: Buckets(BATCH_SIZE_BUCKETS))
    batch_seconds: Buckets = field(default_factory=lambda: Buckets(SECONDS_BUCKETS))
    latency_seconds: Buckets = field(default_factory=lambda: Buckets(LATENCY_BUCKETS))
    http_statuses: Counter[int] = field(default_factory=Counter)  # orchestrator responses other than GET /health
    health_check_statuses: Counter[int] = field(default_factory=Counter)  # GET /health responses

    def as_dict(self) -> dict:
        elapsed = time.monotonic() - self.started
        return {
            "batches": self.batches,
            "delivered": self.delivered,
            "past_end": self.past_end,
            "results": self.results,
            "duplicates": self.duplicates,
            "dead_letters": self.dead_letters,
            "retries": self.retries,
            "recommender_calls": self.recommender_calls,
            "claimed": self.claimed,
            "rate_limit_waits": self.rate_limit_waits,
            "rate_limit_wait_seconds": round(self.rate_limit_wait_seconds, 3),
            "breaker_openings": self.breaker_openings,
            "cap_conflicts": self.cap_conflicts,
            "total_rewards_usd": usd_text(self.total_rewards_usd),
            "elapsed_seconds": round(elapsed, 3),
        }
