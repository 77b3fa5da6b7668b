"""The recovery loop: every consumer periodically takes over stale entries.

Entries a dead consumer held are reclaimed once they have been unsettled
longer than the visibility timeout (XAUTOCLAIM on a stream). Lost entries
(trimmed while pending) and poison messages (delivered more than
``max_deliveries`` times) go to the dead-letter stream; the rest are handled
like any other micro-batch.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import redis

from consumer.transports.base import TransportError
from rewardpilot.logs import entry_id_fields

if TYPE_CHECKING:
    from consumer.pool import ConsumerPool


async def recover_once(pool: ConsumerPool) -> int:
    """Run one recovery pass; return how many entries were reclaimed."""
    found = await pool.transport.reclaim()
    if found.lost:
        await pool.dead_letter_lost(found.lost, found.stream)
    if found.poison:
        await pool.dead_letter_poison(found.poison)
    if found.deliveries:
        pool.stats.claimed += len(found.deliveries)
        pool.log.info("reclaimed stale entries", stream=found.deliveries[0].stream or pool.stream,
                      **entry_id_fields([delivery.entry_id for delivery in found.deliveries]))
        # A pass can claim more than one micro-batch; a bigger batch could
        # cost more rate-limit tokens than the bucket's burst ever holds.
        size = pool.settings.batch_size
        for start in range(0, len(found.deliveries), size):
            await pool.handle(found.deliveries[start:start + size])
    return len(found.deliveries) + len(found.poison) + len(found.lost)


async def recovery_loop(pool: ConsumerPool) -> None:
    """Run ``recover_once`` every ``claim_interval_seconds`` until the pool stops."""
    interval = pool.settings.claim_interval_seconds
    while not pool.stopping:
        try:
            while await recover_once(pool) and not pool.stopping:
                pass
        except (redis.ConnectionError, redis.TimeoutError, TransportError) as exc:
            pool.log.warning("recovery pass failed; transport unreachable", error=str(exc))
        try:
            await asyncio.wait_for(pool.wait_stopping(), timeout=interval)
        except asyncio.TimeoutError:
            pass
