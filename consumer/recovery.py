"""The recovery loop: every consumer periodically takes over stale entries.

Entries a dead consumer held are reclaimed once they have been unsettled
longer than the visibility timeout (XAUTOCLAIM on a stream). Lost entries
(trimmed while pending) and poison messages (delivered more than
``max_deliveries`` times) go to the dead-letter stream; the rest are handled
like any other micro-batch.

The loop also removes consumers of its group that hold no pending entries and
have been idle far longer than the visibility timeout. These are consumers
killed without leaving the group (SIGKILL, a lost container), which would
otherwise stay listed for good.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import redis

from consumer.batch_log import entry_id_bounds
from consumer.failure_log import RepeatedFailureLog
from consumer.group import remove_idle_consumers
from consumer.transports.base import TransportError
from rewardpilot.logs import entry_id_fields

if TYPE_CHECKING:
    from consumer.pool import ConsumerPool

# A consumer with no pending entries is removed after max(IDLE_CONSUMER_MIN_SECONDS,
# IDLE_CONSUMER_TIMEOUTS x visibility timeout) of XINFO CONSUMERS idle time. A running
# consumer reads every --block-ms unless its circuit breaker holds it back, and one
# removed while alive joins the group again when it next reads an entry.
# NOTE: Redis 7.0 (checked on 7.0.15) counts idle time from the last read that
# returned entries, and Valkey 9.1 from the last read attempt. On Redis 7.0 a running
# consumer of a stream that got no entry for that long is removed too. It joins again
# with its next entry.
IDLE_CONSUMER_MIN_SECONDS = 3600
IDLE_CONSUMER_TIMEOUTS = 10
IDLE_CONSUMER_CHECK_SECONDS = 60.0  # how often one process looks for idle consumers


def idle_consumer_threshold_ms(visibility_timeout_ms: int) -> int:
    """Return the idle time after which a consumer without pending entries counts as gone."""
    return max(IDLE_CONSUMER_MIN_SECONDS * 1000, IDLE_CONSUMER_TIMEOUTS * visibility_timeout_ms)


def group_streams(pool: ConsumerPool) -> list[str]:
    """Return the streams whose consumer group the pool reads: the partitions, or the one stream.

    A transport that is not a Redis stream (a queue) has no group and returns [].
    """
    transport = pool.transport
    streams = getattr(transport, "streams", None)
    if streams is not None:
        return list(streams)
    stream = getattr(transport, "stream", None)
    return [stream] if stream is not None else []


async def remove_gone_consumers(pool: ConsumerPool) -> int:
    """Remove the group's idle consumers without pending entries on every stream; return how many."""
    threshold_ms = idle_consumer_threshold_ms(pool.settings.visibility_timeout_ms)
    removed = 0
    for stream in group_streams(pool):
        try:
            removed_here = await remove_idle_consumers(pool.client, stream, pool.group, threshold_ms, keep=pool.name)
        except redis.ResponseError as exc:
            pool.log.warning("could not remove idle consumers from the group", stream=stream, error=str(exc))
            continue
        for consumer in removed_here:
            pool.log.info("removed idle consumer without pending entries from the group", stream=stream,
                          removed_consumer=consumer.name, idle_seconds=round(consumer.idle_ms / 1000),
                          threshold_seconds=threshold_ms // 1000)
            removed += 1
    return removed


async def recover_once(pool: ConsumerPool) -> int:
    """Run one recovery pass; return how many entries were reclaimed."""
    found = await pool.transport.reclaim()
    if found.lost:
        await pool.dead_letter_lost(found.lost, found.stream)
    if found.poison:
        await pool.dead_letter_poison(found.poison)
    if found.deliveries:
        pool.stats.claimed += len(found.deliveries)
        claimed = [delivery.entry_id for delivery in found.deliveries]
        pool.log.info("reclaimed stale entries", stream=found.deliveries[0].stream or pool.stream,
                      **entry_id_fields(claimed), last_entry_id=entry_id_bounds(claimed)[1])
        # A pass can claim more than one micro-batch; a bigger batch could
        # cost more rate-limit tokens than the bucket's burst ever holds.
        size = pool.settings.batch_size
        for start in range(0, len(found.deliveries), size):
            await pool.handle(found.deliveries[start:start + size])
    return len(found.deliveries) + len(found.poison) + len(found.lost)


async def recovery_loop(pool: ConsumerPool) -> None:
    """Run ``recover_once`` every ``claim_interval_seconds`` until the pool stops.

    A pass that fails because Redis or the transport is unreachable is
    logged through ``RepeatedFailureLog``: at once, then once a minute with
    the count, and once more when a pass works again.
    """
    interval = pool.settings.claim_interval_seconds
    next_consumer_check = time.monotonic()
    failures = RepeatedFailureLog(pool.log)
    while not pool.stopping:
        try:
            while await recover_once(pool) and not pool.stopping:
                pass
            if time.monotonic() >= next_consumer_check and not pool.stopping:
                next_consumer_check = time.monotonic() + IDLE_CONSUMER_CHECK_SECONDS
                await remove_gone_consumers(pool)
        except (redis.ConnectionError, redis.TimeoutError, TransportError) as exc:
            failures.failed("recovery pass failed; transport unreachable", error=str(exc),
                            retry_in_seconds=interval)
        else:
            failures.succeeded("recovery pass completed again after transport failures")
        try:
            await asyncio.wait_for(pool.wait_stopping(), timeout=interval)
        except asyncio.TimeoutError:
            pass
