"""A circuit breaker that stops a consumer from pulling work while the
recommender is down.

The breaker starts *closed*, and calls flow. After ``failure_threshold``
consecutive transient failures it is *open*, and nothing is pulled for
``cooldown_seconds``. Then it is *half-open*: exactly one probe call goes
through. The probe's success closes the breaker, and its failure opens it
for another cool-down.

The breaker lives in one consumer process and counts the failures of every
worker task in that process. Processes do not share it, so each process
sends its own probe after an outage.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from rewardpilot.logs import get_logger

log = get_logger(__name__)


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass
class BreakerStats:
    """Counters for the run summary."""

    openings: int = 0
    probes: int = 0
    failures: int = 0
    successes: int = 0


class CircuitBreaker:
    """Consecutive-failure breaker with one probe in half-open.

    Call ``await wait_until_closed()`` before pulling a batch, then
    ``record_success()`` or ``record_failure()`` for each recommender call.
    Record only transient failures, because a permanent error is about one
    request and not about the service's health. A caller that returns from ``wait_until_closed()``
    in half-open holds the probe and must report its result, or call
    ``abandon_probe()`` when it made no call (for example, the batch was
    empty).
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_seconds: float = 30.0,
        *,
        probe_timeout_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if cooldown_seconds <= 0:
            raise ValueError(f"cooldown_seconds must be greater than zero, got {cooldown_seconds}")
        if probe_timeout_seconds is not None and probe_timeout_seconds <= 0:
            raise ValueError(f"probe_timeout_seconds must be greater than zero, got {probe_timeout_seconds}")

        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self.probe_timeout_seconds = probe_timeout_seconds or cooldown_seconds
        self.stats = BreakerStats()
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._probe_started_at: float | None = None
        self._changed = asyncio.Event()
        self.log = log

    def bind_log(self, **context) -> None:
        """Add ``context`` (such as the consumer and run) to every line this breaker logs."""
        self.log = log.bind(**context)

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    async def wait_until_closed(self) -> None:
        """Return when the caller may call the recommender.

        Returns at once while closed. While open, sleeps until the cool-down
        ends, then lets the first caller through as the probe. Other callers
        wait until the probe's result is recorded. A probe that reports
        nothing within ``probe_timeout_seconds`` (default: the cool-down) is
        treated as lost, and the next caller becomes the probe.
        """
        while True:
            if self._state is BreakerState.CLOSED:
                return

            now = self._clock()
            if self._state is BreakerState.OPEN:
                remaining = self._opened_at + self.cooldown_seconds - now
                if remaining <= 0:
                    self._start_probe(now)
                    return
                await self._wait_for_change(remaining)
                continue

            # Half-open: one probe is out.
            if self._probe_started_at is None:
                self._start_probe(now)
                return
            remaining = self._probe_started_at + self.probe_timeout_seconds - now
            if remaining <= 0:
                self.log.warning("circuit breaker probe lost; sending another", probe_timeout_seconds=self.probe_timeout_seconds)
                self._start_probe(now)
                return
            await self._wait_for_change(remaining)

    def record_success(self) -> None:
        """Record a successful call: closes a half-open breaker and resets the failure count.

        A success while open comes from a call started before the breaker
        opened, so it is counted but does not close the breaker early.
        """
        self.stats.successes += 1
        if self._state is BreakerState.OPEN:
            return

        self._consecutive_failures = 0
        if self._state is BreakerState.HALF_OPEN:
            self.log.info("circuit breaker closed; probe succeeded")
            self._set_state(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """Record a transient failure: opens the breaker at the threshold or when a probe fails.

        Failures while already open come from calls started before it opened
        and do not extend the cool-down.
        """
        self.stats.failures += 1
        if self._state is BreakerState.OPEN:
            return

        self._consecutive_failures += 1
        if self._state is BreakerState.HALF_OPEN:
            self.log.warning("circuit breaker reopened; probe failed", cooldown_seconds=self.cooldown_seconds)
            self._open()
        elif self._consecutive_failures >= self.failure_threshold:
            self.log.warning(
                "circuit breaker opened",
                consecutive_failures=self._consecutive_failures,
                cooldown_seconds=self.cooldown_seconds,
            )
            self._open()

    def abandon_probe(self) -> None:
        """Give back the probe without a result, so the next waiting caller probes instead."""
        if self._state is BreakerState.HALF_OPEN and self._probe_started_at is not None:
            self._probe_started_at = None
            self._notify()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._probe_started_at = None
        self.stats.openings += 1
        self._set_state(BreakerState.OPEN)

    def _start_probe(self, now: float) -> None:
        self._state = BreakerState.HALF_OPEN
        self._probe_started_at = now
        self.stats.probes += 1

    def _set_state(self, state: BreakerState) -> None:
        self._state = state
        self._notify()

    def _notify(self) -> None:
        # Wake every waiter and give later waiters a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_for_change(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass
