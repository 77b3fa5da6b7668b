"""Reading the results stream: follow it live, or read a range of it."""

from __future__ import annotations

from typing import AsyncIterator, Iterator

import redis
import redis.asyncio as aioredis

from rewardpilot.codec import decode_result
from rewardpilot.models import Recommendation

READ_CHUNK = 1000


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
) -> AsyncIterator[Recommendation]:
    """Yield results as they arrive, from ``start`` (``$`` = only new, ``0`` = from the start).

    Stops after ``idle_timeout_seconds`` without a new result when given,
    otherwise runs until the caller stops iterating.
    """
    last_id = start
    idle = 0.0
    while True:
        reply = await client.xread({stream: last_id}, count=READ_CHUNK, block=block_ms)
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
