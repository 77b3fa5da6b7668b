"""``RedisTokenBucket``: one token bucket shared by every consumer that uses
the same Redis, kept in one hash and changed only by ``token_bucket.lua``.

The hash at ``keys.rate_limit(name)`` contains the tokens left, the time of
the last update in microseconds of the server's ``TIME``, the effective
and configured rates, the burst, the counting mode, the name of the consumer
that last set them (``set_by``), and the times of the last cut and the last
reward. It expires ``ttl_seconds`` after its last use, so an abandoned
limiter disappears and the next caller starts with a full bucket at the
configured rate.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from importlib import resources

import redis
import redis.asyncio as aioredis

from consumer.ratelimit.base import AcquireStopped, LimiterStats, RateLimitConfig, RateLimiter, sleep_unless
from rewardpilot.logs import RepeatFilter, get_logger
from rewardpilot.streams import StreamKeys

log = get_logger(__name__)

SCRIPT_SOURCE = resources.files("consumer.ratelimit").joinpath("token_bucket.lua").read_text(encoding="utf-8")


@dataclass(frozen=True)
class BucketReply:
    """One reply of the script."""

    granted: bool
    wait_seconds: float
    tokens: float
    effective_rate: float
    server_time: float
    cut: bool
    present: bool = True  # False only for a guest that found no bucket; the rates are then -1
    configured_rate: float = -1.0

    @classmethod
    def parse(cls, reply: list) -> BucketReply:
        granted, wait_ms, tokens, rate, now_us, cut, present, configured = reply
        return cls(
            granted=int(granted) == 1,
            wait_seconds=int(wait_ms) / 1000,
            tokens=float(tokens),
            effective_rate=float(rate),
            server_time=int(now_us) / 1_000_000,
            cut=int(cut) == 1,
            present=int(present) == 1,
            configured_rate=float(configured),
        )


class RedisTokenBucket(RateLimiter):
    """A token bucket in Redis shared by every process that uses the same key.

    ``acquire`` runs the script and, when denied, sleeps exactly the wait the
    script computed from the shared state before asking again. That is not
    polling at a fixed interval: each sleep ends when, at the current
    effective rate, enough tokens will have accrued. Another consumer may
    take them first, in which case the caller gets a new wait.

    All processes sharing a bucket should use the same ``RateLimitConfig``.
    When they differ, the latest caller's rate, burst and counting mode
    apply to every process. The first call of each limiter that writes the
    bucket logs a warning when the stored values differ from its own.

    A ``guest`` limiter (a replay's) takes tokens from a bucket that other
    limiters set up, at their stored rate, burst and counting mode, and
    never writes its own: its ``config`` only sets the expiry and the ratio
    of the floor and the recovery to the rate. Its cost is the transactions
    in a batch, which the stored counting mode turns into tokens. While no
    bucket exists, a guest is granted at once and creates none, and its
    ``effective_rate()`` is infinite.

    ``key``, when given, replaces ``keys.rate_limit(name)``.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        config: RateLimitConfig,
        *,
        keys: StreamKeys | None = None,
        name: str = "orchestrator",
        key: str | None = None,
        guest: bool = False,
    ):
        self.client = client
        self.config = config
        self.key = key or (keys or StreamKeys()).rate_limit(name)
        self.guest = guest
        self.stats = LimiterStats()
        self.last_reply: BucketReply | None = None
        self.log = log
        self.set_by = ""  # the consumer name stored in the bucket, set by bind_log
        self._script = client.register_script(SCRIPT_SOURCE)
        self._effective_rate = math.inf if guest else config.rate
        self._configured_rate = math.inf if guest else config.rate
        self._climb_log = RepeatFilter(interval_seconds=10.0)
        # A guest writes no settings, so it has none to compare.
        self._settings_checked = guest
        self._settings_lock = asyncio.Lock()

    def bind_log(self, **context) -> None:
        """Add ``context`` to every line this limiter logs; its ``consumer`` is stored in the bucket it sets up."""
        self.log = log.bind(**context)
        self.set_by = str(context.get("consumer") or "")

    def batch_cost(self, batch_size: int) -> int:
        """Return the cost of a call for ``batch_size`` transactions: a guest passes the count, which the script converts."""
        if self.guest:
            if batch_size < 1:
                raise ValueError(f"batch_size must be at least 1, got {batch_size}")
            return batch_size
        return super().batch_cost(batch_size)

    async def acquire(self, cost: int = 1, stop: asyncio.Event | None = None) -> float:
        """Wait until ``cost`` tokens are granted; return the seconds spent waiting.

        Raises ValueError when ``cost`` exceeds the burst of an owner, because
        such a request could never be granted, and ``AcquireStopped`` when ``stop``
        is set while the caller waits. The loop checks ``stop`` itself: the
        caller's cancellation alone is not enough, because redis-py 8.2's
        asyncio client can lose one that arrives during the script call.

        NOTE: denied callers reserve nothing, so N callers waiting on an empty
        bucket all wake when the next token is due and one of them gets it.
        That costs about N script calls per granted token (4 processes of 4
        tasks at 50 tokens/s made about 800 calls/s in the shared-limit test).
        """
        self._check_cost(cost)
        self.stats.acquires += 1
        started = time.monotonic()
        denied = False

        while True:
            reply = await self.try_acquire(cost)
            if reply.granted:
                break
            denied = True
            self.stats.waits += 1
            if not await sleep_unless(stop, reply.wait_seconds):
                waited = time.monotonic() - started
                self.stats.seconds_waited += waited
                raise AcquireStopped(cost, waited)

        if not denied:
            return 0.0
        waited = time.monotonic() - started
        self.stats.seconds_waited += waited
        return waited

    async def try_acquire(self, cost: int = 1) -> BucketReply:
        """Ask once for ``cost`` tokens without waiting.

        The reply contains whether they were granted and, if not, the wait
        until enough tokens accrue at the current rate.
        """
        self._check_cost(cost)
        return await self._run("acquire", cost)

    async def release(self, cost: int) -> None:
        """Give back ``cost`` unused tokens, capped at the burst.

        Best effort: a Redis error is logged and swallowed, because release
        runs on the way out of a cancelled or failed task.
        """
        self._check_cost(cost)
        try:
            await self._run("release", cost)
        except redis.RedisError as exc:
            self.log.warning("rate limiter release failed; tokens not returned", key=self.key, cost=cost,
                             error=str(exc))
            return
        self.stats.releases += 1

    async def penalize(self) -> bool:
        """Cut the shared effective rate after a 429 that followed a granted token.

        Returns True when this call made the cut, and False when another
        consumer already cut within ``cut_interval_seconds`` or the rate is
        at its floor.
        """
        before = self._effective_rate
        reply = await self._run("penalize", 0)
        self.stats.penalties += 1
        if reply.cut:
            self.stats.cuts += 1
            self.log.warning(
                "rate limit cut after HTTP 429",
                key=self.key,
                previous_rate=round(before, 3),
                effective_rate=round(reply.effective_rate, 3),
                configured_rate=self._configured_rate,
            )
        return reply.cut

    async def reward(self) -> None:
        """Raise the shared effective rate after a success, up to the configured rate.

        Skips the round trip while the last seen effective rate equals the
        configured rate. A cut by another process shows up in the next
        ``acquire`` reply, which re-enables rewards here.
        """
        if self._effective_rate >= self._configured_rate:
            return

        reply = await self._run("reward", 0)
        self.stats.rewards += 1
        self._log_climb(reply.effective_rate)

    def effective_rate(self) -> float:
        return self._effective_rate

    async def peek(self) -> BucketReply:
        """Read the bucket after refill without changing it."""
        return await self._run("peek", 0)

    async def _run(self, operation: str, cost: int) -> BucketReply:
        if operation != "peek" and not self._settings_checked:
            await self._check_stored_settings()
        config = self.config
        raw = await self._script(
            keys=[self.key],
            args=[
                operation,
                repr(config.rate),
                config.burst,
                cost,
                repr(config.decrease_factor),
                repr(config.floor_rate),
                repr(config.recovery_rate),
                math.ceil(config.cut_interval_seconds * 1_000_000),
                math.ceil(config.ttl_seconds * 1000),
                "guest" if self.guest else "owner",
                config.counting,
                self.set_by,
            ],
        )
        reply = BucketReply.parse(raw)
        if reply.present:
            self._effective_rate = reply.effective_rate
            self._configured_rate = reply.configured_rate
        else:
            self._effective_rate = self._configured_rate = math.inf
        self.last_reply = reply
        return reply

    async def _check_stored_settings(self) -> None:
        """Warn once when this limiter's next write will replace another consumer's rate, burst or counting mode.

        Runs before the first script call that writes the bucket. The lock
        holds back this limiter's other callers until the stored values are
        read, so none of them overwrites the values first. A Redis error
        propagates, as the script call would have failed too, and the check
        runs again on the next call.
        """
        async with self._settings_lock:
            if self._settings_checked:
                return
            stored = await self.client.hmget(self.key, ["configured", "burst", "counting", "set_by"])
            self._settings_checked = True

        stored_rate, stored_burst, stored_counting, stored_set_by = (
            None if value is None else _text(value) for value in stored
        )
        if stored_rate is None or stored_burst is None:
            return
        previous_rate = float(stored_rate)
        previous_burst = float(stored_burst)
        # A bucket written before the counting mode was stored counted requests, the default.
        previous_counting = stored_counting or "requests"
        config = self.config
        if (previous_rate, previous_burst, previous_counting) == (config.rate, config.burst, config.counting):
            return
        self.log.warning(
            "replacing the shared rate limit set by another consumer. Every consumer of this bucket "
            "now uses this consumer's rate, burst and counting mode, so start them all with the same "
            "--rate, --burst and --count",
            key=self.key,
            previous_set_by=stored_set_by or None,
            previous_rate_per_second=float(f"{previous_rate:.4g}"),
            rate_per_second=float(f"{config.rate:.4g}"),
            previous_burst=_whole(previous_burst),
            burst=config.burst,
            previous_counting=previous_counting,
            counting=config.counting,
        )

    def _check_cost(self, cost: int) -> None:
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ValueError(f"token cost must be a whole number of at least 1, got {cost!r}")
        if cost > self.config.burst and not self.guest:
            raise ValueError(
                f"token cost {cost} exceeds the burst of {self.config.burst}, so it can never be granted; "
                "raise the burst to at least the batch size or count requests instead of transactions"
            )

    def _log_climb(self, rate: float) -> None:
        if rate >= self._configured_rate:
            self.log.info("rate limit back at the configured rate", key=self.key,
                          effective_rate=self._configured_rate)
            return
        allowed, suppressed = self._climb_log.allow(self.key)
        if allowed:
            self.log.info(
                "rate limit climbing back",
                key=self.key,
                effective_rate=round(rate, 3),
                configured_rate=self._configured_rate,
                updates_not_logged=suppressed,
            )


@dataclass(frozen=True)
class BucketState:
    """A snapshot of a shared bucket for ``rewardpilot status``."""

    tokens: float
    effective_rate: float
    configured_rate: float
    burst: float
    idle_seconds: float


def read_bucket_state(client: redis.Redis, key: str) -> BucketState | None:
    """Read a bucket's stored state with a blocking client; None when no consumer used it recently.

    ``tokens`` is as of the last update. ``idle_seconds`` is the time since
    then by the server's clock.
    """
    fields = client.hgetall(key)
    if not fields:
        return None
    values = {_text(name): _text(value) for name, value in fields.items()}

    seconds, microseconds = client.time()
    now_us = seconds * 1_000_000 + microseconds
    return BucketState(
        tokens=float(values["tokens"]),
        effective_rate=float(values["rate"]),
        configured_rate=float(values["configured"]),
        burst=float(values["burst"]),
        idle_seconds=max(0, now_us - int(values["updated_us"])) / 1_000_000,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _whole(value: float) -> int | float:
    """Return ``value`` as an int when it is whole, so a stored burst logs as 10, not 10.0."""
    return int(value) if value.is_integer() else value
