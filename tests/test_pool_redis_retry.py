"""``ConsumerPool._with_redis_retry``: the Redis retries around opening, giving back and settling."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
import redis

from consumer import pool
from consumer.pool import REDIS_BACKOFF_SECONDS, ConsumerPool


def _pool_stub() -> SimpleNamespace:
    """Just what ``_with_redis_retry`` uses of a pool: the rate-limited warning."""
    return SimpleNamespace(_log_repeated=lambda *args, **fields: None)


def _failing(times: int):
    """An operation that raises ConnectionError ``times`` times, then returns "done"; calls counts the tries."""
    calls = []

    async def operation():
        calls.append(1)
        if len(calls) <= times:
            raise redis.ConnectionError("Connection refused")
        return "done"

    return operation, calls


def test_retry_beyond_backoff_steps(monkeypatch):
    """Settling retries 20 times, more than there are backoff steps; the last step's delay repeats."""
    delays = []

    async def no_wait(seconds):
        delays.append(seconds)

    monkeypatch.setattr(pool.asyncio, "sleep", no_wait)
    failures = len(REDIS_BACKOFF_SECONDS) + 5
    operation, calls = _failing(failures)

    outcome = asyncio.run(ConsumerPool._with_redis_retry(_pool_stub(), operation, attempts=20))

    assert outcome == "done"
    assert len(calls) == failures + 1
    assert delays[:len(REDIS_BACKOFF_SECONDS)] == list(REDIS_BACKOFF_SECONDS)
    assert delays[len(REDIS_BACKOFF_SECONDS):] == [REDIS_BACKOFF_SECONDS[-1]] * 5


def test_retry_raises_after_last_attempt(monkeypatch):
    async def no_wait(seconds):
        return None

    monkeypatch.setattr(pool.asyncio, "sleep", no_wait)
    operation, calls = _failing(100)

    with pytest.raises(redis.ConnectionError):
        asyncio.run(ConsumerPool._with_redis_retry(_pool_stub(), operation, attempts=20))
    assert len(calls) == 20
