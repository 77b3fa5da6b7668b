"""Recovery of stale pending entries with XAUTOCLAIM.

An entry delivered to a consumer that died stays in the group's pending
entries list. Every consumer periodically claims entries that have been
pending longer than the visibility timeout and processes them itself:

* entries that XAUTOCLAIM reports as deleted (trimmed while pending) are
  recorded in the dead-letter stream with that reason (Redis 7.0 and later
  already removed them from the pending entries list);
* entries delivered more than ``max_deliveries`` times are poison messages
  and go to the dead-letter stream;
* the rest are handled like any other micro-batch.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from consumer.pool import ConsumerPool

MAX_SCAN_ROUNDS = 100  # bounds one pass over a very long pending entries list


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def delivery_counts(pool: ConsumerPool, entry_ids: list[str]) -> dict[str, int]:
    """Return how many times each entry (now held by this consumer) was delivered."""
    if not entry_ids:
        return {}
    rows = await pool.client.xpending_range(
        pool.stream, pool.group, min=entry_ids[0], max=entry_ids[-1],
        count=len(entry_ids) * 2, consumername=pool.name,
    )
    return {_text(row["message_id"]): int(row["times_delivered"]) for row in rows}


async def claim_stale(pool: ConsumerPool) -> int:
    """Claim and settle this group's stale pending entries once; return how many were claimed."""
    settings = pool.settings
    start = "0-0"
    claimed_total = 0

    for _ in range(MAX_SCAN_ROUNDS):
        if pool.stopping:
            break
        reply = await pool.client.xautoclaim(
            pool.stream, pool.group, pool.name, min_idle_time=settings.visibility_timeout_ms,
            start_id=start, count=settings.batch_size,
        )
        start = _text(reply[0])
        claimed = [(_text(entry_id), fields) for entry_id, fields in reply[1] if fields is not None]
        deleted = [_text(entry_id) for entry_id in (reply[2] if len(reply) > 2 else [])]

        if deleted:
            await pool.dead_letter_deleted(deleted)
        if claimed:
            claimed_total += len(claimed)
            pool.stats.claimed += len(claimed)
            pool.log.info("claimed stale pending entries", count=len(claimed),
                          first_entry_id=claimed[0][0], last_entry_id=claimed[-1][0])
            counts = await delivery_counts(pool, [entry_id for entry_id, _ in claimed])
            poison = [(e, f) for e, f in claimed if counts.get(e, 1) > settings.max_deliveries]
            healthy = [(e, f) for e, f in claimed if counts.get(e, 1) <= settings.max_deliveries]
            if poison:
                await pool.dead_letter_poison(poison, counts)
            if healthy:
                await pool.handle(healthy)
        if start == "0-0":
            break
    return claimed_total


async def recovery_loop(pool: ConsumerPool) -> None:
    """Run ``claim_stale`` every ``claim_interval_seconds`` until the pool stops."""
    interval = pool.settings.claim_interval_seconds
    while not pool.stopping:
        try:
            await claim_stale(pool)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            pool.log.warning("recovery pass failed; Redis unreachable", error=str(exc))
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        try:
            await asyncio.wait_for(pool.wait_stopping(), timeout=interval)
        except asyncio.TimeoutError:
            pass
