"""The rate-limiter interface, its settings and ``parse_rate``."""

from __future__ import annotations

import abc
import asyncio
import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from consumer.errors import InvalidRateLimitError

Counting = Literal["requests", "transactions"]
COUNTING_MODES: tuple[str, ...] = ("requests", "transactions")

SECONDS_PER_UNIT = {
    "s": 1.0, "sec": 1.0, "second": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0,
    "h": 3600.0, "hour": 3600.0,
}
RATE_FORMS = "a positive number, a slash and a unit, such as 100/min; units: " + ", ".join(SECONDS_PER_UNIT)

_RATE_PATTERN = re.compile(r"^\s*(?P<count>[0-9]+(?:\.[0-9]+)?)\s*/\s*(?P<unit>[a-zA-Z]+)\s*$")


def parse_rate(text: str) -> float:
    """Parse a rate such as ``"100/min"`` into events per second.

    Raises InvalidRateLimitError naming the value and the accepted forms.
    """
    match = _RATE_PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidRateLimitError(f"invalid rate {text!r}: expected {RATE_FORMS}")

    unit = match["unit"].lower()
    if unit not in SECONDS_PER_UNIT:
        raise InvalidRateLimitError(f"invalid rate {text!r}: unknown unit {match['unit']!r}; expected {RATE_FORMS}")

    per_second = float(match["count"]) / SECONDS_PER_UNIT[unit]
    if per_second <= 0:
        raise InvalidRateLimitError(f"invalid rate {text!r}: the rate must be greater than zero")
    return per_second


@dataclass(frozen=True)
class RateLimitConfig:
    """Settings of one shared rate limit.

    ``rate`` is the configured rate in tokens per second and ``burst`` the
    bucket size in tokens. ``counting`` sets what a token pays for: one
    recommender request (a batch call is one request) or one transaction.

    The adaptive part: a 429 despite a granted token multiplies the
    effective rate by ``decrease_factor``, at most once per
    ``cut_interval_seconds`` and never below ``floor_rate`` (``min_rate``,
    by default 5% of ``rate``). Successes raise it
    by ``recovery_per_second`` for each second of successful calls, up to
    ``rate``. The defaults (half, a floor of 5%, back from half to full in
    10 s) follow TCP's additive-increase, multiplicative-decrease rule.
    """

    rate: float
    burst: int
    counting: Counting = "requests"
    decrease_factor: float = 0.5
    min_rate: float | None = None
    recovery_per_second: float | None = None
    cut_interval_seconds: float = 2.0
    ttl_seconds: float = 600.0

    def __post_init__(self) -> None:
        if not (isinstance(self.rate, (int, float)) and math.isfinite(self.rate) and self.rate > 0):
            raise InvalidRateLimitError(f"invalid rate {self.rate!r}: expected a number of tokens per second greater than zero")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise InvalidRateLimitError(f"invalid burst {self.burst!r}: expected a whole number of tokens, at least 1")
        if self.counting not in COUNTING_MODES:
            raise InvalidRateLimitError(f"invalid counting mode {self.counting!r}: expected one of {', '.join(COUNTING_MODES)}")
        if not 0 < self.decrease_factor < 1:
            raise InvalidRateLimitError(f"invalid decrease_factor {self.decrease_factor!r}: expected a number between 0 and 1")
        if self.min_rate is not None and not 0 < self.min_rate <= self.rate:
            raise InvalidRateLimitError(f"invalid min_rate {self.min_rate!r}: expected a number above 0 and at most the rate {self.rate}")
        if self.recovery_per_second is not None and self.recovery_per_second <= 0:
            raise InvalidRateLimitError(f"invalid recovery_per_second {self.recovery_per_second!r}: expected a number greater than zero")
        if self.cut_interval_seconds < 0:
            raise InvalidRateLimitError(f"invalid cut_interval_seconds {self.cut_interval_seconds!r}: must not be negative")
        if self.ttl_seconds <= 0:
            raise InvalidRateLimitError(f"invalid ttl_seconds {self.ttl_seconds!r}: must be greater than zero")

    @classmethod
    def from_options(cls, rate: str, burst: int | str, counting: str = "requests", **settings) -> RateLimitConfig:
        """Build a config from command-line values such as ``--rate 100/min --burst 10``."""
        try:
            burst_tokens = int(burst)
        except (TypeError, ValueError):
            raise InvalidRateLimitError(f"invalid burst {burst!r}: expected a whole number of tokens, at least 1") from None
        return cls(rate=parse_rate(rate), burst=burst_tokens, counting=counting, **settings)

    @property
    def floor_rate(self) -> float:
        """The lowest effective rate a 429 can cut to, in tokens per second."""
        return self.min_rate if self.min_rate is not None else self.rate * 0.05

    @property
    def recovery_rate(self) -> float:
        """How fast the effective rate climbs back, in tokens per second per second."""
        return self.recovery_per_second if self.recovery_per_second is not None else self.rate / 20

    def cost_for(self, batch_size: int) -> int:
        """Return the tokens one recommender call for ``batch_size`` transactions costs."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return 1 if self.counting == "requests" else batch_size


@dataclass
class LimiterStats:
    """Counters for the run summary. Seconds are wall-clock seconds spent waiting."""

    acquires: int = 0
    waits: int = 0
    seconds_waited: float = 0.0
    releases: int = 0
    penalties: int = 0
    cuts: int = 0
    rewards: int = 0


class AcquireStopped(Exception):
    """``acquire`` gave up because its ``stop`` event was set while it waited; no tokens are held."""

    def __init__(self, cost: int, waited: float):
        super().__init__(f"stopped after waiting {waited:.3f} s for {cost} rate-limit tokens")
        self.cost = cost
        self.waited = waited


async def sleep_unless(stop: asyncio.Event | None, seconds: float) -> bool:
    """Sleep ``seconds``, or less when ``stop`` is set first; return whether the whole sleep ran."""
    if stop is None:
        await asyncio.sleep(seconds)
        return True
    if stop.is_set():
        return False
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return True
    return False


class Permit:
    """Tokens granted to one caller, to be marked used once the call is sent."""

    def __init__(self, cost: int, waited: float):
        self.cost = cost
        self.waited = waited
        self.used = False

    def mark_used(self) -> None:
        self.used = True


class RateLimiter(abc.ABC):
    """A token bucket that callers wait on before each recommender call.

    Waiting for a token is not a failure and never counts as a retry.
    """

    config: RateLimitConfig
    stats: LimiterStats

    @abc.abstractmethod
    async def acquire(self, cost: int = 1, stop: asyncio.Event | None = None) -> float:
        """Wait until ``cost`` tokens are granted; return the seconds waited.

        When ``stop`` is set while the caller waits, raise ``AcquireStopped``
        without taking any tokens. ``GuardedRecommender`` passes the pool's
        stopping event, so a worker stops waiting once the pool stops.
        """

    @abc.abstractmethod
    async def release(self, cost: int) -> None:
        """Give back ``cost`` unused tokens, best effort and never above the burst."""

    @abc.abstractmethod
    async def penalize(self) -> bool:
        """Cut the effective rate after a 429; return whether this call made the cut."""

    @abc.abstractmethod
    async def reward(self) -> None:
        """Raise the effective rate after a success, up to the configured rate."""

    @abc.abstractmethod
    def effective_rate(self) -> float:
        """Return the effective rate in tokens per second, as last seen by this limiter."""

    def bind_log(self, **context) -> None:
        """Add ``context`` (such as the consumer, group and run) to every line this limiter logs."""

    def batch_cost(self, batch_size: int) -> int:
        """Return the cost that ``acquire`` takes for a call for ``batch_size`` transactions, per ``config.counting``."""
        return self.config.cost_for(batch_size)

    async def acquire_for_batch(self, batch_size: int, stop: asyncio.Event | None = None) -> float:
        """Wait for the tokens a call for ``batch_size`` transactions costs, per ``batch_cost``.

        ``stop`` is passed to ``acquire``.
        """
        return await self.acquire(self.batch_cost(batch_size), stop)

    def batch_permit(self, batch_size: int, stop: asyncio.Event | None = None):
        """Return ``permit`` for the cost of a call for ``batch_size`` transactions, per ``batch_cost``."""
        return self.permit(self.batch_cost(batch_size), stop)

    @asynccontextmanager
    async def permit(self, cost: int = 1, stop: asyncio.Event | None = None) -> AsyncIterator[Permit]:
        """Acquire ``cost`` tokens for the block and give them back unless it marks them used.

        Call ``permit.mark_used()`` right before sending the request. A task
        cancelled or failing before that point returns its tokens, so a
        shutdown does not waste the shared budget. ``stop`` is passed to
        ``acquire``.
        """
        waited = await self.acquire(cost, stop)
        granted = Permit(cost, waited)
        try:
            yield granted
        finally:
            if not granted.used:
                await self.release(cost)
