"""A recommender call under the shared rate limit, retries and the circuit breaker.

``GuardedRecommender.call`` is what the pool awaits for each micro-batch:

1. wait until the circuit breaker lets calls through;
2. wait for tokens from the shared rate limiter (not a failure, not a retry);
3. call the recommender;
4. on a transient failure, record it, cut the shared rate on a 429, back off
   with full jitter (or the server's Retry-After) and try again, up to the
   retry policy's maximum attempts.

When the attempts run out it returns None and the pool gives the batch back
to the consumer group: an outage never sends an entry to the dead-letter
stream. It also returns None when the pool starts stopping while the call
waits on the breaker or for tokens. The batch then goes back to the group at
once, in place of waiting out a cool-down or spending the shared budget on
shutdown. A ``ConfigurationError`` (such as a wrong orchestrator URL path)
takes the same path and is also logged as an error.

``wait_until_reachable`` is the pool's start-up wait: it probes the
recommender's ``connect()`` until it responds, outside the breaker, so that
a consumer started next to its orchestrator does not count the
orchestrator's start-up as failures.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Sequence

from consumer.breaker import BreakerState, CircuitBreaker
from consumer.errors import ConfigurationError, PermanentError, TransientError
from consumer.ratelimit.base import AcquireStopped, RateLimiter
from consumer.recommenders import ItemError, Recommender, WorkItem
from consumer.retry import RetryPolicy
from consumer.stats import PoolStats
from consumer.settle import Result
from rewardpilot.logs import RepeatFilter, entry_id_fields

Outcomes = list[Result | ItemError]

# The maximum time the pool waits at start for a networked recommender to
# respond before its workers read. ``rewardpilot orchestrator --no-wallets``
# responded to /health 1.3 s to 1.6 s after its start on a 2-CPU container, so this leaves
# room for a slower host or a container that is still being scheduled.
STARTUP_WAIT_SECONDS = 30.0
# Pauses between start-up probes: doubling from the first, up to the last.
STARTUP_PROBE_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.6, 2.0)
# Seconds a start-up probe in flight may still take after a stop, so that a
# refused connection is still logged. A probe to a silent host is cancelled after it.
STOPPED_PROBE_GRACE_SECONDS = 1.0


def _with_history(outcome, attempts: int, first_failure: datetime | None):
    """Record on an item error the transient failures that came before it."""
    if isinstance(outcome, ItemError):
        return replace(outcome, attempts=attempts, first_failure_at=first_failure)
    return outcome


class GuardedRecommender:
    """Wraps a recommender with a rate limiter, a retry policy and a circuit breaker."""

    def __init__(self, recommender: Recommender, *, stats: PoolStats, log,
                 limiter: RateLimiter | None = None, breaker: CircuitBreaker | None = None,
                 retry: RetryPolicy | None = None, stopping: asyncio.Event | None = None):
        self.recommender = recommender
        self.limiter = limiter
        self.breaker = breaker
        self.retry = retry or RetryPolicy()
        self.stats = stats
        self.log = log
        self.stopping = stopping or asyncio.Event()
        self.startup_wait_seconds = STARTUP_WAIT_SECONDS
        self._repeats = RepeatFilter()

    @property
    def name(self) -> str:
        return self.recommender.name

    async def call(self, items: Sequence[WorkItem], entry_ids: Sequence[str]) -> Outcomes | None:
        """Return one outcome per item, or None when transient failures used up the attempts."""
        attempt = 0
        first_failure: datetime | None = None
        while True:
            if self.breaker is not None and not await self._breaker_lets_through():
                self.log.info("stopping while the circuit breaker is open; batch given back to the group",
                              **entry_id_fields(entry_ids))
                return None

            try:
                outcomes = await self._call_once(items)
            except asyncio.CancelledError:
                if self.breaker is not None:
                    self.breaker.abandon_probe()  # a cancelled probe must not block the others
                raise
            except AcquireStopped as exc:
                if self.breaker is not None:
                    self.breaker.abandon_probe()
                self.log.info("stopping while waiting for rate-limit tokens; batch given back to the group",
                              waited_seconds=round(exc.waited, 3), **entry_id_fields(entry_ids))
                return None
            except TransientError as exc:
                attempt += 1
                first_failure = first_failure or datetime.now(timezone.utc)
                await self._record_failure(exc)
                if isinstance(exc, ConfigurationError):
                    self._log_configuration_error(exc, entry_ids)
                if not self.retry.should_retry(attempt) or self.stopping.is_set():
                    self.log.warning(
                        "recommender failing; batch given back to the group", attempts=attempt,
                        error=str(exc), status=exc.status, **entry_id_fields(entry_ids),
                    )
                    return None
                delay = self.retry.next_delay(attempt - 1, exc)
                self.stats.retries += 1
                self.log.info("retrying recommender call", attempt=attempt, delay_seconds=round(delay, 3),
                              error=str(exc), status=exc.status)
                await asyncio.sleep(delay)
                continue

            await self._record_success()
            if attempt:
                outcomes = [_with_history(outcome, attempt + 1, first_failure) for outcome in outcomes]
            return outcomes

    def _log_configuration_error(self, exc: ConfigurationError, entry_ids: Sequence[str]) -> None:
        allowed, suppressed = self._repeats.allow("configuration-error")
        if allowed:
            self.log.error("recommender misconfigured; entries held, not dead-lettered, until it is fixed",
                           error=str(exc), status=exc.status, suppressed_repeats=suppressed,
                           **entry_id_fields(entry_ids))

    async def wait_until_reachable(self, drain: bool = False) -> bool:
        """Probe the recommender's ``connect()`` until it responds, for up to ``startup_wait_seconds``.

        Returns True when it responded, and False when the wait ran out, the
        recommender rejected this consumer or is misconfigured, or the pool
        started stopping. A recommender without ``connect`` returns True at
        once. The probes bypass the circuit breaker and the rate limiter, and
        every outcome but a prompt success is logged. ``drain`` only changes
        the wording of the logs.
        """
        connect = getattr(self.recommender, "connect", None)
        if connect is None:
            return True

        url = getattr(self.recommender, "health_url", None)
        started = time.monotonic()
        probes = 0
        while True:
            probes += 1
            try:
                if not await self._unless_stopping(connect(), grace_seconds=STOPPED_PROBE_GRACE_SECONDS):
                    break
            except ConfigurationError as exc:
                self.log.error("recommender misconfigured at start; entries stay pending until it is fixed",
                               recommender=self.name, url=url, error=str(exc), status=exc.status)
                return False
            except TransientError as exc:
                waited = time.monotonic() - started
                if probes == 1:
                    self.log.warning(
                        "recommender not reachable at start; waiting for it before reading entries, which "
                        "stay pending until it responds" + (", and the drain waits for it" if drain else ""),
                        recommender=self.name, url=url, max_wait_seconds=self.startup_wait_seconds,
                        error=str(exc),
                    )
                if waited >= self.startup_wait_seconds:
                    self.log.warning(
                        "recommender still not reachable; starting the workers, which retry under the "
                        "circuit breaker", recommender=self.name, url=url, waited_seconds=round(waited, 1),
                        probes=probes, error=str(exc),
                    )
                    return False
                delay = STARTUP_PROBE_DELAYS[min(probes, len(STARTUP_PROBE_DELAYS)) - 1]
                if not await self._unless_stopping(asyncio.sleep(min(delay, self.startup_wait_seconds - waited))):
                    break
                continue
            except PermanentError as exc:
                self.log.error("recommender rejected this consumer at start", recommender=self.name,
                               error=str(exc), status=exc.status)
                return False

            if probes > 1:
                self.log.info("recommender reachable; starting the workers", recommender=self.name, url=url,
                              waited_seconds=round(time.monotonic() - started, 1), probes=probes)
            return True

        self.log.info("stopping while waiting for the recommender at start", recommender=self.name, url=url,
                      waited_seconds=round(time.monotonic() - started, 1))
        return False

    async def _unless_stopping(self, operation, grace_seconds: float = 0.0) -> bool:
        """Await ``operation`` unless the pool starts stopping first; return whether it completed.

        Once stopping, the operation still gets ``grace_seconds`` to finish,
        and is cancelled after that. Its exceptions propagate.
        """
        task = asyncio.ensure_future(operation)
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and grace_seconds > 0:
                await asyncio.wait({task}, timeout=grace_seconds)
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            return False
        task.result()  # raises the operation's exception
        return True

    async def _breaker_lets_through(self) -> bool:
        """Wait until the breaker lets a call through; return False if the pool starts stopping first."""
        if self.breaker.state is BreakerState.CLOSED:
            return True

        opened = asyncio.ensure_future(self.breaker.wait_until_closed())
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({opened, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not opened.done():
                opened.cancel()
                await asyncio.gather(opened, return_exceptions=True)
        # Once the wait has returned, this caller may be the probe, so it goes through even when stopping.
        return opened.done() and not opened.cancelled() and opened.exception() is None

    async def _call_once(self, items: Sequence[WorkItem]) -> Outcomes:
        self.stats.recommender_calls += 1
        if self.limiter is None:
            return await self.recommender.recommend(items)

        async with self.limiter.batch_permit(len(items), stop=self.stopping) as permit:
            if permit.waited:
                self.stats.rate_limit_waits += 1
                self.stats.rate_limit_wait_seconds += permit.waited
            permit.mark_used()
            return await self.recommender.recommend(items)

    async def _record_failure(self, exc: TransientError) -> None:
        if self.breaker is not None:
            # Count openings here, where they happen: the pool's workers share
            # one breaker, so counting around each worker's wait would miss the
            # first opening and count a reopening once per waiting worker.
            openings = self.breaker.stats.openings
            self.breaker.record_failure()
            self.stats.breaker_openings += self.breaker.stats.openings - openings
        if self.limiter is not None and exc.status == 429:
            if await self.limiter.penalize():
                self.log.warning("orchestrator returned 429; shared rate cut",
                                 effective_rate=round(self.limiter.effective_rate(), 3))

    async def _record_success(self) -> None:
        if self.breaker is not None:
            self.breaker.record_success()
        if self.limiter is not None:
            await self.limiter.reward()

    async def aclose(self) -> None:
        await self.recommender.aclose()
