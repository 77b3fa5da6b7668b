"""The Modal Queue transport: micro-batches on a ``modal.Queue``, leases in Redis.

The producer (``publish_to_queue``) groups transactions by partition (a hash
of user_id) and puts micro-batches onto the queue. Each queue item is a dict
``{"entries": [[entry_id, fields], ...], "deliveries": n}`` whose entry ids
look like stream ids (``<milliseconds>-<sequence>``), so results get their
``published_at`` as they do from a stream.

A Modal Queue has no acknowledgement: ``get_many`` removes items for good.
So the transport writes a lease to Redis for every item it takes: a hash of
the item's unsettled entries plus a deadline in a sorted set. Settling
removes entries from their lease, and the lease goes when it is empty.
``reclaim`` takes over leases whose deadline (the visibility timeout) passed,
which is how a batch held by a dead consumer is delivered again. Results and
de-duplication markers are written by the same settle script as the stream
transport, so the delivery promise is the same: at least once, and results
effectively once.

What the queue cannot do that the stream can:

* replay: taken items are gone, so ``rewardpilot replay`` needs the stream;
* range reads and pending-entry inspection (XRANGE, XPENDING): only leases
  in Redis show what is in flight;
* keep items for long: Modal clears a partition 24 hours after its last put
  (the ``partition_ttl`` default in modal 1.x).

NOTE: between ``get_many`` and the lease write an item exists only in this
process; a crash in that window loses the batch without a dead letter.
"""

from __future__ import annotations

import itertools
import json
import queue as stdlib_queue
import secrets
import time
import zlib
from typing import Any, Iterable

import redis.asyncio as aioredis

from consumer.settings import ConsumerSettings
from consumer.settle import Result, SettleCounts, Settler, SpendChecks
from consumer.transports.base import Delivery, Reclaimed
from rewardpilot.codec import encode_transaction
from rewardpilot.logs import get_logger
from rewardpilot.models import DeadLetter, Transaction

DEFAULT_PARTITIONS = 16
MAX_PARTITIONS = 100_000  # Modal's limit of partitions per queue (modal 1.x docs)

# How long a put waits for room on a full partition. Without a timeout,
# modal.Queue.put_many blocks until a consumer makes room, for ever if none runs.
DEFAULT_PUT_TIMEOUT_SECONDS = 60.0
GIVE_BACK_TIMEOUT_SECONDS = 5.0


class QueueFullError(RuntimeError):
    """A Modal Queue partition stayed full for the whole put timeout; ``published`` counts what went in before."""

    def __init__(self, message: str, published: int):
        super().__init__(message)
        self.published = published

# Lua scripts take key names as arguments, like settle.lua, so they are not
# Redis Cluster safe either.
_RELEASE = """
local lease, expiry = KEYS[1], KEYS[2]
for i = 2, #ARGV do
  redis.call('HDEL', lease, ARGV[i])
end
-- The lease is empty when only its delivery count field is left.
if redis.call('HLEN', lease) <= 1 then
  redis.call('DEL', lease)
  redis.call('ZREM', expiry, ARGV[1])
end
return 1
"""

_CLAIM_EXPIRED = """
local expiry, lease_prefix = KEYS[1], ARGV[1]
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local found = {}
for _, lease_id in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, limit)) do
  local lease = lease_prefix .. lease_id
  found[#found + 1] = {lease_id, redis.call('HGETALL', lease)}
  redis.call('DEL', lease)
  redis.call('ZREM', expiry, lease_id)
end
return found
"""

DELIVERIES_FIELD = "__deliveries__"


def partition_for(user_id: str, partitions: int) -> str:
    """Return the queue partition of a user: ``p<n>``, n = CRC-32 of user_id mod ``partitions``.

    Modal partition keys must be 1 to 64 bytes, and a user_id may be longer,
    so the key is a short hash bucket, never the user_id itself.
    """
    return f"p{zlib.crc32(user_id.encode()) % partitions}"


def _check_partitions(partitions: int) -> None:
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions {partitions} must be between 1 and {MAX_PARTITIONS}")


def queue_item(entries: list[tuple[str, dict]], deliveries: int = 0) -> dict:
    """Return one queue item: a micro-batch of ``(entry_id, fields)`` and its delivery count."""
    return {"entries": [[entry_id, dict(fields)] for entry_id, fields in entries], "deliveries": deliveries}


class EntryIds:
    """Stream-like entry ids ``<milliseconds>-<sequence>`` for queue items.

    The sequence starts at a random 24-bit offset times 2**24, so two
    producers in the same millisecond almost never issue the same id.
    """

    def __init__(self):
        self._offset = secrets.randbits(24) << 24
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{int(time.time() * 1000)}-{self._offset + next(self._counter)}"


async def publish_to_queue(queue: Any, transactions: Iterable[Transaction], batch_size: int = 100,
                           partitions: int = DEFAULT_PARTITIONS,
                           put_timeout_seconds: float = DEFAULT_PUT_TIMEOUT_SECONDS) -> int:
    """Put transactions onto ``queue`` as micro-batches partitioned by user; return how many.

    ``queue`` is a ``modal.Queue`` (or a stand-in with its methods). Items
    of one partition keep the order of ``transactions``. A put waits up to
    ``put_timeout_seconds`` for room on a full partition, then raises
    ``QueueFullError``, whose ``published`` counts the transactions put
    before; the rest were not put.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} must be at least 1")
    if not put_timeout_seconds > 0:
        raise ValueError(f"put_timeout_seconds {put_timeout_seconds} must be more than 0")
    _check_partitions(partitions)

    ids = EntryIds()
    by_partition: dict[str, list[tuple[str, dict]]] = {}
    for transaction in transactions:
        partition = partition_for(transaction.user_id, partitions)
        by_partition.setdefault(partition, []).append((ids.next(), encode_transaction(transaction)))

    published = 0
    for partition, entries in by_partition.items():
        items = [queue_item(entries[start:start + batch_size]) for start in range(0, len(entries), batch_size)]
        try:
            await queue.put_many.aio(items, partition=partition, timeout=put_timeout_seconds)
        except stdlib_queue.Full:
            raise QueueFullError(
                f"partition {partition!r} of the queue stayed full for {put_timeout_seconds:g} s, so "
                f"{len(entries):,} transactions of it were not put ({published:,} of other partitions were); "
                "start consumers to make room, or publish again later", published,
            ) from None
        published += len(entries)
    return published


class ModalQueueTransport:
    """One consumer (``consumer``) taking micro-batches from a Modal Queue's partitions."""

    name = "modal-queue"

    def __init__(self, queue: Any, client: aioredis.Redis, settings: ConsumerSettings, consumer: str, *,
                 partitions: int = DEFAULT_PARTITIONS, lease_seconds: float | None = None,
                 items_per_read: int = 1):
        _check_partitions(partitions)
        self.queue = queue
        self.client = client
        self.settings = settings
        self.consumer = consumer
        self.partitions = [f"p{index}" for index in range(partitions)]
        self.lease_seconds = lease_seconds if lease_seconds is not None else settings.visibility_timeout_ms / 1000
        self.items_per_read = items_per_read
        base = settings.keys.base
        self.expiry_key = f"{base}queue:lease-expiry"
        self.lease_prefix = f"{base}queue:lease:"
        self.log = get_logger("transport", consumer=consumer, transport=self.name)
        # XACK in the settle script goes to a stream that never exists, where it is a no-op.
        self.settler = Settler.for_settings(client, settings, group=settings.group_name,
                                            transactions_stream=f"{base}queue:no-stream")
        self._release = client.register_script(_RELEASE)
        self._claim_expired = client.register_script(_CLAIM_EXPIRED)
        self._lease_of: dict[str, tuple[str, str]] = {}  # entry_id -> (lease_id, partition)
        self._next_partition = secrets.randbelow(partitions)

    async def open(self) -> None:
        """Nothing to create: a Modal Queue has no consumer groups."""

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """Take items from the next non-empty partition, waiting up to ``block_ms`` on one of them.

        NOTE: ``count`` is not enforced, because a queue item is a whole
        micro-batch of the producer's ``batch_size``.
        """
        for _ in range(len(self.partitions)):
            partition = self._rotate()
            items = await self.queue.get_many.aio(self.items_per_read, block=False, partition=partition)
            if items:
                return await self._lease(items, partition)

        partition = self._rotate()
        try:
            items = await self.queue.get_many.aio(self.items_per_read, block=True, timeout=block_ms / 1000,
                                                  partition=partition)
        except stdlib_queue.Empty:
            return []
        return await self._lease(items, partition)

    def _rotate(self) -> str:
        partition = self.partitions[self._next_partition]
        self._next_partition = (self._next_partition + 1) % len(self.partitions)
        return partition

    async def _lease(self, items: list[dict], partition: str) -> list[Delivery]:
        deliveries: list[Delivery] = []
        for item in items:
            entries = [Delivery(str(entry_id), fields) for entry_id, fields in item["entries"]]
            await self._write_lease(entries, partition, int(item.get("deliveries", 0)) + 1)
            deliveries += entries
        return deliveries

    async def _write_lease(self, entries: list[Delivery], partition: str, deliveries: int) -> None:
        lease_id = f"{partition}:{secrets.token_hex(8)}"
        mapping = {delivery.entry_id: _encode_fields(delivery.fields) for delivery in entries}
        mapping[DELIVERIES_FIELD] = str(deliveries)
        deadline_ms = int((time.time() + self.lease_seconds) * 1000)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.lease_prefix + lease_id, mapping=mapping)
            pipe.zadd(self.expiry_key, {lease_id: deadline_ms})
            await pipe.execute()
        for delivery in entries:
            self._lease_of[delivery.entry_id] = (lease_id, partition)

    async def settle(self, results: list[tuple[str, Result]], dead_letters: list[DeadLetter],
                     acknowledge: list[str], checks: SpendChecks | None = None) -> SettleCounts:
        """Write outcomes with the settle script, then drop the entries from their leases.

        A crash between the two leaves the lease to expire; the redelivered
        entries then find their markers and are counted as duplicates.
        Entries returned as conflicts keep their lease.
        """
        counts = await self.settler.settle(results, dead_letters, acknowledge_only=acknowledge, checks=checks)
        conflicts = set(counts.conflicts)
        entry_ids = [entry_id for entry_id, _ in results] + [letter.entry_id for letter in dead_letters] + list(acknowledge)
        await self._release_entries([entry_id for entry_id in entry_ids if entry_id not in conflicts])
        return counts

    async def _release_entries(self, entry_ids: list[str]) -> dict[str, list[str]]:
        by_lease: dict[str, list[str]] = {}
        for entry_id in entry_ids:
            held = self._lease_of.pop(entry_id, None)
            if held is not None:
                by_lease.setdefault(held[0], []).append(entry_id)
        for lease_id, ids in by_lease.items():
            await self._release(keys=[self.lease_prefix + lease_id, self.expiry_key], args=[lease_id, *ids])
        return by_lease

    async def give_back(self, entry_ids: list[str]) -> None:
        """Put the entries back on their partition now, keeping their delivery count."""
        held = {entry_id: self._lease_of.get(entry_id) for entry_id in entry_ids}
        by_lease: dict[tuple[str, str], list[str]] = {}
        for entry_id, lease in held.items():
            if lease is not None:
                by_lease.setdefault(lease, []).append(entry_id)

        for (lease_id, partition), ids in by_lease.items():
            lease_key = self.lease_prefix + lease_id
            raw = await self.client.hmget(lease_key, [DELIVERIES_FIELD, *ids])
            deliveries = int(raw[0] or 1)
            entries = [(entry_id, _decode_fields(value)) for entry_id, value in zip(ids, raw[1:]) if value is not None]
            if entries:
                try:
                    await self.queue.put_many.aio([queue_item(entries, deliveries - 1)], partition=partition,
                                                  timeout=GIVE_BACK_TIMEOUT_SECONDS)
                except stdlib_queue.Full:
                    # The lease stays, so reclaim delivers the entries again once its deadline passes.
                    self.log.warning("queue partition full; entries stay leased until reclaimed",
                                     partition=partition, lease_id=lease_id, count=len(entries))
                    continue
            await self._release_entries(ids)

    async def reclaim(self) -> Reclaimed:
        """Take over leases past their deadline; batches delivered too often are poison."""
        found = Reclaimed()
        now_ms = int(time.time() * 1000)
        claimed = await self._claim_expired(keys=[self.expiry_key], args=[self.lease_prefix, now_ms, 100])
        for lease_id, flat in claimed:
            lease_id = _text(lease_id)
            partition = lease_id.partition(":")[0]
            fields = {_text(flat[index]): _text(flat[index + 1]) for index in range(0, len(flat), 2)}
            deliveries = int(fields.pop(DELIVERIES_FIELD, "0")) + 1
            entries = [Delivery(entry_id, _decode_fields(value)) for entry_id, value in fields.items()]
            if not entries:
                continue
            if deliveries > self.settings.max_deliveries:
                # Lease the poison entries again so that settling their dead letters releases them.
                await self._write_lease(entries, partition, deliveries)
                found.poison += [(delivery, deliveries) for delivery in entries]
                continue
            await self._write_lease(entries, partition, deliveries)
            found.deliveries += entries
        if claimed:
            self.log.info("reclaimed expired leases", leases=len(claimed))
        return found

    async def drained(self) -> bool:
        """Return True when every partition is empty and no lease is held."""
        if await self.client.zcard(self.expiry_key):
            return False
        return await self.queue.len.aio(total=True) == 0

    async def close(self) -> None:
        """Leave leases in place: unsettled ones expire and are reclaimed by others."""
        if self._lease_of:
            self.log.warning("consumer left leased entries for others to reclaim", count=len(self._lease_of))


def _encode_fields(fields: dict) -> str:
    return json.dumps({_text(name): _text(value) for name, value in fields.items()})


def _decode_fields(value) -> dict:
    return json.loads(_text(value))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value
