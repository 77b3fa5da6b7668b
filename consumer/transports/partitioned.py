"""The partitioned stream transport: per-user order across consumers and workers.

Transactions are partitioned by user id over the streams
``{base}transactions:p{N}`` (``rewardpilot.partitions``). Each partition has
a consumer group of the run's group name and is worked by one consumer at a
time, the holder of its lease (``consumer.transports.leases``). Inside a
consumer, ``read`` hands out a partition's next batch only after its
previous batch was settled or given back, so however many workers the pool
runs, one user's transactions are settled in stream order.

On taking a partition over, the new holder first claims every entry the
group still has pending on it and reads those again before any new entry.
XAUTOCLAIM with a minimum idle time of 0 is safe there, because the lease
makes the new holder the only reader. A crash therefore does not reorder a
user's history. Entries claimed from another consumer count in
``PoolStats.claimed``.

Consumers rebalance every third of the lease time (``balance``): each one
works out its target (``leases.fair_share``), takes free leases up to it
and gives up leases above it. A partition to give up gets no new reads or
batches. Its buffered entries stay pending for the next holder, and its
lease is released at the first rebalance after its batch in hand is
settled or given back.

Poison messages (delivered more than ``max_deliveries`` times) and entries
deleted while pending are set aside when they are read again and returned
by ``reclaim`` for the pool to dead-letter.
"""

from __future__ import annotations

import asyncio
import contextvars

import redis
import redis.asyncio as aioredis

from consumer.group import backlog, ensure_group
from consumer.settings import ConsumerSettings
from consumer.settle import Result, SettleCounts, Settler, SpendChecks
from consumer.stats import PoolStats
from consumer.transports.base import Delivery, Reclaimed
from consumer.transports.leases import Leases
from consumer.transports.redis_stream import MissingGroup
from rewardpilot.logs import entry_id_fields, get_logger
from rewardpilot.models import DeadLetter
from rewardpilot.partitions import agree_count_async, partition_of, partition_streams
from rewardpilot.streams import entry_key

MAX_CLAIM_ROUNDS = 100  # bounds one takeover pass over a very long pending entries list
CLAIM_COUNT = 1000
# KEYS[1] a partition stream. ARGV[1] group, ARGV[2] this consumer, ARGV[3] start id, ARGV[4] count.
# Runs XAUTOCLAIM with JUSTID and a minimum idle time of 0. Returns Redis's raw reply
# (cursor, claimed ids, deleted ids) and, fourth, how many claimed ids another consumer
# had pending. With a minimum idle time of 0, XAUTOCLAIM processes the first COUNT
# entries of the pending entries list from the start id, deleted ones included (checked
# on Redis 7.0.15), so XPENDING with the same start and count lists their owners.
_CLAIM_SCRIPT = """
local owners = {}
for _, row in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], '+', ARGV[4])) do
  owners[row[1]] = row[2]
end
local reply = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'COUNT', ARGV[4], 'JUSTID')
local from_others = 0
for _, entry_id in ipairs(reply[2]) do
  if owners[entry_id] and owners[entry_id] ~= ARGV[2] then
    from_others = from_others + 1
  end
end
return {reply[1], reply[2], reply[3] or {}, from_others}
"""

# The partition of the batch last handed to the current asyncio task. Entry ids
# are unique only within one stream, so when two partitions have a batch with
# the same entry id in hand, ``settle`` uses it to pick the caller's partition.
_current_partition: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "rewardpilot_current_partition", default=None
)


class PartitionUnknownError(RuntimeError):
    """Entries to settle or give back do not belong to exactly one batch in hand."""


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value



class PartitionedStreamTransport:
    """One consumer (``consumer``) of the run's group on every partition stream it leases."""

    name = "redis-partitioned"

    def __init__(self, client: aioredis.Redis, settings: ConsumerSettings, consumer: str,
                 partitions: int | None = None):
        self.client = client
        self._claim = client.register_script(_CLAIM_SCRIPT)
        self.settings = settings
        self.consumer = consumer
        self.partitions = partitions or settings.partitions
        self.group = settings.group_name
        self.streams = partition_streams(settings.keys, self.partitions)
        self.leases = Leases(client, settings.keys, self.group, consumer, self.partitions, settings.lease_ms)
        self.log = get_logger("transport", consumer=consumer, group=self.group, partitions=self.partitions)
        self.missing_group = MissingGroup(client, self.group, self.log)
        self.settlers = [
            Settler.for_settings(client, settings, group=self.group, transactions_stream=stream)
            for stream in self.streams
        ]

        self.held: set[int] = set()  # partitions whose lease this consumer holds
        self.in_hand: dict[int, set[str]] = {}  # entry ids handed out and not yet settled
        self._reading: set[int] = set()  # partitions with an XREADGROUP in flight
        self._buffered: dict[int, list[Delivery]] = {}  # read from Redis, not yet handed out
        self._read_pending_first: set[int] = set()  # partitions whose pending entries come first
        self._set_aside: dict[int, Reclaimed] = {}  # poison and lost entries for ``reclaim``
        self._releasing: set[int] = set()  # held partitions above the target, released once idle
        self.stats: PoolStats | None = None  # the pool's counters for claimed entries, set by attach_stats
        self._turn = 0
        self._changed = asyncio.Condition()
        self._lease_task: asyncio.Task | None = None
        self._closing = asyncio.Event()

    # Lifecycle

    def attach_stats(self, stats: PoolStats) -> None:
        """Count entries claimed from other consumers on a takeover in ``stats.claimed``.

        The pool calls this, because these entries are claimed while a lease
        is taken, outside the recovery loop that counts the other transports' claims.
        """
        self.stats = stats

    async def open(self) -> None:
        """Check the partition count, create every partition's group and take a first share of leases."""
        await agree_count_async(self.client, self.settings.keys, self.partitions)
        for stream in self.streams:
            if await ensure_group(self.client, stream, self.group, self.settings.start_id):
                self.log.info("consumer group created", stream=stream, start_id=self.settings.start_id)
        await self.missing_group.remember_start()
        await self.balance()
        if self._lease_task is None:  # the pool retries open() after a connection error
            self._lease_task = asyncio.create_task(self._keep_leases())

    async def close(self) -> None:
        """Stop renewing, release every lease and leave the groups this consumer holds nothing in."""
        self._closing.set()
        if self._lease_task is not None:
            await asyncio.gather(self._lease_task, return_exceptions=True)
        try:
            for partition in sorted(self.held):
                await self.leases.release(partition)
            self.held.clear()
            await self.leases.leave()
            for stream in self.streams:
                held = await self.client.xpending_range(stream, self.group, min="-", max="+", count=1,
                                                        consumername=self.consumer)
                if held:
                    self.log.warning("consumer left entries pending for the next lease holder", stream=stream)
                    continue
                await self.client.xgroup_delconsumer(stream, self.group, self.consumer)
        except redis.RedisError as exc:
            self.log.warning("could not release leases or leave the groups; they expire by themselves",
                             error=str(exc))

    # Leases

    async def _keep_leases(self) -> None:
        """Renew and rebalance the leases every third of the lease time until ``close``.

        It stops through an event, not by cancelling: redis-py can turn a
        cancelled command into a connection error, which this loop would retry.
        """
        interval = self.settings.lease_ms / 1000 / 3
        while not self._closing.is_set():
            try:
                await asyncio.wait_for(self._closing.wait(), timeout=interval)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self.balance()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.log.warning("could not renew partition leases; they expire unless renewed in time",
                                 error=str(exc), partitions=sorted(self.held))

    async def balance(self) -> None:
        """Renew held leases, give up leases above this consumer's target, and take free ones up to it."""
        target = await self.leases.target()

        for partition in sorted(self.held):
            if not await self.leases.renew(partition):
                self.log.warning("partition lease lost to another consumer", partition=partition)
                self._drop(partition)

        self._choose_releases(len(self.held) - target)
        for partition in sorted(self._releasing):
            if self._idle(partition):
                await self.leases.release(partition)
                self._drop(partition)
                self.log.info("partition lease released to balance the consumers", partition=partition,
                              target=target)

        if len(self.held) < target:
            await self._take_free(target)

    def _choose_releases(self, extra: int) -> None:
        """Mark ``extra`` held partitions to release, keeping the ones marked earlier.

        A busy partition would almost never be idle at the moment ``balance``
        looks, so a marked partition gets no new reads or batches and becomes
        idle once its batch in hand is settled or given back. Its buffered
        entries stay pending, so the next holder claims them, or this
        consumer reads them again first if the mark is lifted.
        """
        if extra <= 0:
            self._releasing.clear()
            return
        # Marked ones first, then idle ones, then the highest partition numbers.
        ranked = sorted(self.held, key=lambda p: (p not in self._releasing, not self._idle(p), -p))
        chosen = set(ranked[:extra])
        for partition in chosen - self._releasing:
            self._read_pending_again(partition)
        self._releasing = chosen

    async def _take_free(self, target: int) -> None:
        # Start at a different partition per consumer, so consumers starting together try different leases.
        start = partition_of(self.consumer, self.partitions)
        for offset in range(self.partitions):
            if len(self.held) >= target:
                return
            partition = (start + offset) % self.partitions
            if partition in self.held or not await self.leases.acquire(partition):
                continue
            await self._take_over(partition)
            self.held.add(partition)
            self.log.info("partition lease taken", partition=partition, stream=self.streams[partition])
            async with self._changed:
                self._changed.notify_all()

    async def _take_over(self, partition: int) -> None:
        """Claim every entry the group has pending on a partition, so they are read again first.

        JUSTID leaves the delivery count as it is; reading the entries again raises it.
        XAUTOCLAIM runs inside a one-line script because redis-py's reply
        parser drops the cursor and the deleted ids for JUSTID; the deleted
        ids (pending entries trimmed from the stream, which Redis 7.0+ removes
        from the pending entries list) are set aside to be dead-lettered.
        """
        stream, start = self.streams[partition], "0-0"
        from_others = 0
        for _ in range(MAX_CLAIM_ROUNDS):
            try:
                reply = await self._claim(keys=[stream], args=[self.group, self.consumer, start, CLAIM_COUNT])
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await ensure_group(self.client, stream, self.group, "0")
                break
            start = _text(reply[0])
            deleted = [_text(entry_id) for entry_id in reply[2]]
            if deleted:
                self._set_aside_lost(partition, deleted)
            from_others += int(reply[3])
            if start == "0-0":
                break
        self._read_pending_again(partition)
        if from_others:
            if self.stats is not None:
                self.stats.claimed += from_others
            self.log.info("claimed entries other consumers left pending", partition=partition, stream=stream,
                          claimed=from_others)

    def _set_aside_lost(self, partition: int, entry_ids: list[str]) -> None:
        found = self._set_aside.setdefault(partition, Reclaimed(stream=self.streams[partition]))
        found.lost.extend(entry_ids)
        self.log.warning("pending entries were deleted from the stream; setting them aside",
                         partition=partition, stream=self.streams[partition], **entry_id_fields(entry_ids))

    def _read_pending_again(self, partition: int) -> None:
        """Make the next read of a partition start from its pending entries.

        Buffered entries are pending too, so they are dropped here and come
        back in stream order with the rest.
        """
        self._read_pending_first.add(partition)
        self._buffered.pop(partition, None)

    def _idle(self, partition: int) -> bool:
        return (partition not in self.in_hand and partition not in self._reading
                and not self._buffered.get(partition) and partition not in self._set_aside)

    def _drop(self, partition: int) -> None:
        """Forget a partition; what this consumer read from it stays pending for the next holder."""
        self.held.discard(partition)
        self._releasing.discard(partition)
        self._buffered.pop(partition, None)
        self._read_pending_first.discard(partition)

    # Reading

    def _free(self) -> list[int]:
        """Return held partitions with nothing in hand or being read, rotated for fairness.

        Partitions marked for release are left out, so they become idle.
        """
        ordered = sorted(self.held - self._releasing)
        if not ordered:
            return []
        turn = self._turn % len(ordered)
        return [p for p in ordered[turn:] + ordered[:turn] if p not in self.in_hand and p not in self._reading
                and p not in self._set_aside]

    def _hand_out(self, partition: int, deliveries: list[Delivery]) -> list[Delivery]:
        self.in_hand[partition] = {delivery.entry_id for delivery in deliveries}
        self._turn += 1
        _current_partition.set(partition)
        return deliveries

    def _take_buffered(self, count: int) -> list[Delivery]:
        for partition in self._free():
            buffered = self._buffered.get(partition)
            if partition in self._read_pending_first:
                continue
            if buffered:
                batch, self._buffered[partition] = buffered[:count], buffered[count:]
                return self._hand_out(partition, batch)
        return []

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """Return the next batch of one partition that has no batch in hand, in stream order.

        Waits up to ``block_ms`` for entries, or for a partition to come free
        when every held partition has a batch in hand or being read.
        """
        batch = self._take_buffered(count)
        if batch:
            return batch

        # Partitions taken over or given back start from their pending entries.
        # Reading marks the partition, so no other worker takes it until the hand-out.
        replay = next((p for p in self._free() if p in self._read_pending_first), None)
        if replay is not None:
            batch = await self._read_pending(replay, count)
            if batch:
                return self._hand_out(replay, batch)

        free = [p for p in self._free() if p not in self._read_pending_first and not self._buffered.get(p)]
        if not free:
            await self._wait_for_change(block_ms)
            return self._take_buffered(count)

        self._reading.update(free)
        try:
            reply = await self._read_new(free, count, block_ms)
        finally:
            self._reading.difference_update(free)
        for stream, entries in reply:
            partition = self.streams.index(_text(stream))
            # A partition taken over meanwhile reads these again with its other pending entries.
            if partition in self.held and partition not in self._read_pending_first:
                self._buffered.setdefault(partition, []).extend(
                    Delivery(_text(entry_id), fields, self.streams[partition])
                    for entry_id, fields in entries if fields is not None
                )
        async with self._changed:
            self._changed.notify_all()
        return self._take_buffered(count)

    async def _read_new(self, partitions: list[int], count: int, block_ms: int) -> list:
        seen = self.missing_group.seen()
        try:
            return await self.client.xreadgroup(
                self.group, self.consumer, {self.streams[p]: ">" for p in partitions},
                count=count, block=block_ms,
            ) or []
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Every partition stream, so that the reads of the other workers find the group there too.
            await self.missing_group.recreate(self.streams, seen)
            return []

    async def _read_pending(self, partition: int, count: int) -> list[Delivery]:
        """Read this consumer's pending entries of a partition again, oldest first.

        Entries delivered more than ``max_deliveries`` times and entries
        deleted from the stream are set aside for ``reclaim``. The partition
        stays busy until the pool has dead-lettered them.
        """
        stream = self.streams[partition]
        self._reading.add(partition)
        try:
            reply = await self.client.xreadgroup(self.group, self.consumer, {stream: "0"}, count=count)
            entries = reply[0][1] if reply else []
            if not entries:
                self._read_pending_first.discard(partition)
                return []
            counts = await self._delivery_counts(stream, [_text(entry_id) for entry_id, _ in entries])
        finally:
            self._reading.discard(partition)

        batch, found = [], Reclaimed(stream=stream)
        for entry_id, fields in entries:
            delivery = Delivery(_text(entry_id), fields, stream)
            delivered = counts.get(delivery.entry_id, 1)
            # A pending entry deleted from the stream comes back with nil fields, which
            # redis-py (8.2) turns into {}. XADD needs at least one field, so empty means deleted.
            if not fields:
                found.lost.append(delivery.entry_id)
            elif delivered > self.settings.max_deliveries:
                found.poison.append((delivery, delivered))
            else:
                batch.append(delivery)
        if found.lost or found.poison:
            # Logged before the merge below, so entries set aside earlier are not listed twice.
            self._log_set_aside(partition, [delivery.entry_id for delivery, _ in found.poison],
                                f"delivered more than {self.settings.max_deliveries} times (max_deliveries)")
            self._log_set_aside(partition, found.lost, "deleted from the stream while pending")
            earlier = self._set_aside.get(partition)
            if earlier is not None:
                found.lost[:0] = earlier.lost
                found.poison[:0] = earlier.poison
            self._set_aside[partition] = found
            # NOTE: the rest of this batch waits for the next read, after the recovery
            # loop has dead-lettered what was set aside (up to claim_interval_seconds).
            return []
        return batch

    def _log_set_aside(self, partition: int, entry_ids: list[str], reason: str) -> None:
        if entry_ids:
            self.log.warning("entries set aside for the dead-letter stream", partition=partition,
                             stream=self.streams[partition], reason=reason, **entry_id_fields(entry_ids))

    async def _delivery_counts(self, stream: str, entry_ids: list[str]) -> dict[str, int]:
        ordered = sorted(entry_ids, key=entry_key)
        rows = await self.client.xpending_range(stream, self.group, min=ordered[0], max=ordered[-1],
                                                count=len(ordered) * 2, consumername=self.consumer)
        return {_text(row["message_id"]): int(row["times_delivered"]) for row in rows}

    async def _wait_for_change(self, block_ms: int) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=block_ms / 1000)
            except asyncio.TimeoutError:
                pass

    # Settling

    async def settle(self, results: list[tuple[str, Result]], dead_letters: list[DeadLetter],
                     acknowledge: list[str], checks: SpendChecks | None = None) -> SettleCounts:
        """Settle entries of one batch on its partition stream; the partition then comes free.

        Entries returned as conflicts stay in hand, so the partition comes
        free only once they are settled again or given back.

        NOTE: the lease is not checked inside the settle script. A holder that
        stalled past its lease can still settle a batch after the next holder
        has read the same entries, so that user's results may come out of order
        once (never twice, because of the outcome markers).
        """
        entry_ids = ([entry_id for entry_id, _ in results] + [letter.entry_id for letter in dead_letters]
                     + list(acknowledge))
        if not entry_ids:
            return SettleCounts()
        users = {recommendation.user_id for _, recommendation in results}
        partition = self._partition_of_batch(entry_ids, users)
        counts = await self.settlers[partition].settle(results, dead_letters, acknowledge_only=acknowledge,
                                                       checks=checks)
        conflicts = set(counts.conflicts)
        await self._finish(partition, [entry_id for entry_id in entry_ids if entry_id not in conflicts])
        return counts

    async def give_back(self, entry_ids: list[str]) -> None:
        """Keep entries pending for this consumer and read them again before anything newer.

        The delivery count goes back down by one (XCLAIM RETRYCOUNT), so giving
        a batch back does not bring it closer to ``max_deliveries``.
        """
        if not entry_ids:
            return
        partition = self._partition_of_batch(entry_ids, set())
        stream = self.streams[partition]
        counts = await self._delivery_counts(stream, entry_ids)
        async with self.client.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.xclaim(stream, self.group, self.consumer, min_idle_time=0, message_ids=[entry_id],
                            retrycount=max(0, counts.get(entry_id, 1) - 1), justid=True)
            await pipe.execute()
        self._read_pending_again(partition)
        await self._finish(partition, entry_ids)

    def _partition_of_batch(self, entry_ids: list[str], users: set[str]) -> int:
        """Return the partition whose batch in hand contains every one of ``entry_ids``."""
        requested = set(entry_ids)
        candidates = [p for p, ids in self.in_hand.items() if requested <= ids]
        if len(candidates) > 1:
            current = _current_partition.get()
            if current in candidates:
                return current
            by_user = {partition_of(user, self.partitions) for user in users}
            candidates = [p for p in candidates if p in by_user] if by_user else candidates
        if len(candidates) != 1:
            raise PartitionUnknownError(
                f"entries {sorted(requested)[:5]} match {len(candidates)} batches in hand, not one; "
                "settle or give back only entries that one read() or reclaim() returned"
            )
        return candidates[0]

    async def _finish(self, partition: int, entry_ids: list[str]) -> None:
        remaining = self.in_hand.get(partition, set()) - set(entry_ids)
        if remaining:
            self.in_hand[partition] = remaining
            return
        self.in_hand.pop(partition, None)
        async with self._changed:
            self._changed.notify_all()

    # Recovery

    async def reclaim(self) -> Reclaimed:
        """Return the entries of one partition set aside as poison or lost, for the pool to dead-letter.

        Also claims, on held partitions, entries that other consumers of the
        group left pending past the visibility timeout (a holder that lost
        its lease mid-batch and then died), to be read again first.
        """
        for partition in sorted(self.held - self._releasing):
            if partition not in self._read_pending_first and await self._others_pending(partition):
                await self._take_over(partition)

        for partition, found in list(self._set_aside.items()):
            del self._set_aside[partition]
            ids = found.lost + [delivery.entry_id for delivery, _ in found.poison]
            self.in_hand.setdefault(partition, set()).update(ids)
            _current_partition.set(partition)
            return found
        return Reclaimed()

    async def _others_pending(self, partition: int) -> bool:
        try:
            summary = await self.client.xpending(self.streams[partition], self.group)
        except redis.ResponseError:
            return False
        for row in summary.get("consumers") or []:
            name = _text(row["name"])
            if name != self.consumer and int(row["pending"]):
                idle = await self.client.xpending_range(
                    self.streams[partition], self.group, min="-", max="+", count=1, consumername=name,
                    idle=self.settings.visibility_timeout_ms,
                )
                if idle:
                    return True
        return False

    async def drained(self) -> bool:
        """Return True when no partition has unread or pending entries and nothing is held here.

        With ``settings.end_id`` (a replay), entries after the end do not count.
        """
        if self.in_hand or self._set_aside or any(self._buffered.values()):
            return False
        for stream in self.streams:
            state = await backlog(self.client, stream, self.group)
            if state.drained:
                continue
            if state.pending or self.settings.end_id is None:
                return False
            if entry_key(await self._last_delivered_id(stream)) < entry_key(self.settings.end_id):
                return False
        return True

    async def _last_delivered_id(self, stream: str) -> str:
        for info in await self.client.xinfo_groups(stream):
            if _text(info["name"]) == self.group:
                return _text(info["last-delivered-id"])
        return "0-0"
