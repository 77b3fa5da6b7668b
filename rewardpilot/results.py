"""Reading the results stream: follow it live, or read a range of it."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Iterator

import redis
import redis.asyncio as aioredis

from rewardpilot.codec import decode_result
from rewardpilot.logs import get_logger
from rewardpilot.models import Recommendation

READ_CHUNK = 1000
# Backoff between reconnection attempts, in seconds, the last one repeated (as the consumers do).
RECONNECT_BACKOFF_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

log = get_logger("results")


class ResultsConnectionLost(ConnectionError):
    """The connection to Redis dropped and did not come back within the reconnect timeout."""

    def __init__(self, seconds: float, error: Exception):
        super().__init__(f"could not reconnect within {seconds:g} s ({str(error).rstrip('.')})")
        self.seconds = seconds
        self.error = error


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _user_of(fields: dict) -> str:
    value = fields.get("user_id", fields.get(b"user_id", b""))
    return _text(value)


async def subscribe(
    client: aioredis.Redis,
    stream: str,
    *,
    start: str = "$",
    user: str | None = None,
    block_ms: int = 5000,
    idle_timeout_seconds: float | None = None,
    reconnect_timeout_seconds: float | None = None,
) -> AsyncIterator[Recommendation]:
    """Yield results as they arrive, from ``start`` (``$`` = only new, ``0`` = from the start).

    Stops after ``idle_timeout_seconds`` without a new result when given,
    otherwise runs until the caller stops iterating. Idle time counts only
    replies without a new entry. With ``reconnect_timeout_seconds``, a
    dropped connection is retried with backoff and reading goes on after
    the last entry read; ``ResultsConnectionLost`` is raised once Redis has
    not replied for that long. Without it, connection errors propagate.
    """
    last_id = start
    idle = 0.0
    failures = 0
    down_since: float | None = None
    while True:
        try:
            reply = await client.xread({stream: last_id}, count=READ_CHUNK, block=block_ms)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if reconnect_timeout_seconds is None:
                raise
            now = time.monotonic()
            down_since = now if down_since is None else down_since
            if now - down_since >= reconnect_timeout_seconds:
                raise ResultsConnectionLost(reconnect_timeout_seconds, exc) from exc
            delay = RECONNECT_BACKOFF_SECONDS[min(failures, len(RECONNECT_BACKOFF_SECONDS) - 1)]
            failures += 1
            if failures == 1 or failures % 10 == 0:
                log.warning("Redis unreachable; reconnecting", stream=stream, error=str(exc), attempts=failures,
                            retry_in_seconds=delay)
            await asyncio.sleep(delay)
            continue

        if failures:
            log.info("reconnected to Redis", stream=stream, attempts=failures)
        failures = 0
        down_since = None
        if not reply:
            idle += block_ms / 1000
            if idle_timeout_seconds is not None and idle >= idle_timeout_seconds:
                return
            continue
        idle = 0.0
        for entry_id, fields in reply[0][1]:
            last_id = _text(entry_id)
            if user is not None and _user_of(fields) != user:
                continue
            yield decode_result(fields)


def read_results(client: redis.Redis, stream: str, *, start: str = "-", end: str = "+",
                 user: str | None = None) -> Iterator[Recommendation]:
    """Yield every result in a range of the stream, in order, in chunks of XRANGE."""
    cursor = start
    while True:
        entries = client.xrange(stream, min=cursor, max=end, count=READ_CHUNK)
        if not entries:
            return
        for entry_id, fields in entries:
            if user is None or _user_of(fields) == user:
                yield decode_result(fields)
        last = _text(entries[-1][0])
        cursor = "(" + last
        if len(entries) < READ_CHUNK:
            return
