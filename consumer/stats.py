"""Counters of one consumer process, read by the run summary and the logs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass
class PoolStats:
    """What a consumer process has done since it started."""

    started: float = field(default_factory=time.monotonic)
    batches: int = 0
    delivered: int = 0
    results: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    retries: int = 0
    recommender_calls: int = 0
    claimed: int = 0
    rate_limit_waits: int = 0
    rate_limit_wait_seconds: float = 0.0
    breaker_openings: int = 0
    total_rewards_usd: Decimal = Decimal("0")
    first_result_at: float | None = None
    last_result_at: float | None = None

    def as_dict(self) -> dict:
        elapsed = time.monotonic() - self.started
        return {
            "batches": self.batches,
            "delivered": self.delivered,
            "results": self.results,
            "duplicates": self.duplicates,
            "dead_letters": self.dead_letters,
            "retries": self.retries,
            "recommender_calls": self.recommender_calls,
            "claimed": self.claimed,
            "rate_limit_waits": self.rate_limit_waits,
            "rate_limit_wait_seconds": round(self.rate_limit_wait_seconds, 3),
            "breaker_openings": self.breaker_openings,
            "total_rewards_usd": str(self.total_rewards_usd),
            "elapsed_seconds": round(elapsed, 3),
        }
