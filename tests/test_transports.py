"""The same consumer tests over both transports: the Redis stream and a Modal Queue.

The Modal Queue is ``InMemoryQueueStandIn`` (tests/modal_standin.py), an
in-memory stand-in with modal.Queue's methods; leases, results and dead
letters live on the real Redis server of the ``redis_url`` fixture.
"""

from __future__ import annotations

import asyncio
import queue as stdlib_queue
import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from modal.exception import InvalidError

from consumer.pool import ConsumerPool
from consumer.settings import ConsumerSettings
from consumer.transports import RedisStreamTransport
from consumer.transports import modal_queue
from consumer.transports.modal_queue import (
    ModalQueueTransport, QueueFullError, partition_for, publish_to_queue, queue_item,
)
from producer.publisher import Producer
from rewardpilot.connection import connect_async
from rewardpilot.models import Transaction
from modal_standin import MAX_PARTITION_ITEMS, InMemoryQueueStandIn

PARTITIONS = 4
RUN_LIMIT_SECONDS = 60  # bounds every pool run, so a hung pool fails the test instead of the suite


def make_transactions(count: int, users: int = 5) -> list[Transaction]:
    return [
        Transaction(transaction_id=f"t-{index}", user_id=f"user-{index % users}", merchant="Whole Foods",
                    category="groceries", amount_usd=Decimal("12.50"), mcc="5411",
                    timestamp=datetime(2026, 11, 1, tzinfo=timezone.utc))
        for index in range(count)
    ]


class StreamSide:
    """Publishes onto and inspects the Redis stream transport."""

    def __init__(self, sync_client, keys):
        self.sync_client = sync_client
        self.keys = keys

    def publish(self, transactions):
        Producer(self.sync_client, self.keys, max_backlog=None).publish_many(transactions)

    def publish_invalid(self):
        self.sync_client.xadd(self.keys.transactions, {"data": "this is not JSON"})

    def transport(self, client, settings, name):
        return RedisStreamTransport(client, settings, name)

    def outstanding(self) -> int:
        groups = self.sync_client.xinfo_groups(self.keys.transactions)
        return sum(int(group["pending"]) + int(group["lag"] or 0) for group in groups)


class QueueSide:
    """Publishes onto and inspects the Modal Queue transport (over the stand-in)."""

    def __init__(self, sync_client, keys):
        self.sync_client = sync_client
        self.keys = keys
        self.queue = InMemoryQueueStandIn()

    def publish(self, transactions):
        asyncio.run(publish_to_queue(self.queue, transactions, batch_size=4, partitions=PARTITIONS))

    def publish_invalid(self):
        self.queue.put(queue_item([(f"{int(time.time() * 1000)}-0", {"data": "this is not JSON"})]), partition="p0")

    def transport(self, client, settings, name):
        return ModalQueueTransport(self.queue, client, settings, name, partitions=PARTITIONS)

    def outstanding(self) -> int:
        leases = self.sync_client.zcard(f"{self.keys.base}queue:lease-expiry")
        return leases + self.queue.len(total=True)


@pytest.fixture(params=["redis-stream", "modal-queue"])
def side(request, sync_client, keys):
    if request.param == "redis-stream":
        return StreamSide(sync_client, keys)
    return QueueSide(sync_client, keys)


def settings_for(keys, **overrides) -> ConsumerSettings:
    values = dict(keys=keys, workers=2, batch_size=10, block_ms=100, drain=True,
                  visibility_timeout_ms=300, claim_interval_seconds=0.1, shutdown_grace_seconds=2)
    values.update(overrides)
    return ConsumerSettings(**values)


async def run_pool(url, side, settings, name="pool"):
    client = connect_async(url, block_ms=settings.block_ms)
    try:
        settings.consumer = name
        pool = ConsumerPool(client, settings, transport=side.transport(client, settings, name))
        return await asyncio.wait_for(pool.run(), RUN_LIMIT_SECONDS)
    finally:
        await client.aclose()


async def read_and_abandon(url, side, settings, name="dies") -> int:
    """Read one micro-batch as a consumer that dies before settling it; return its size."""
    client = connect_async(url, block_ms=settings.block_ms)
    try:
        transport = side.transport(client, settings, name)
        await transport.open()
        deliveries = []
        for _ in range(50):
            deliveries = await transport.read(settings.batch_size, settings.block_ms)
            if deliveries:
                break
        return len(deliveries)
    finally:
        await client.aclose()


async def reclaim_when_expired(url, side, settings, name="also-dies") -> int:
    """Reclaim as a consumer that also dies before settling; return how many it took over."""
    client = connect_async(url, block_ms=settings.block_ms)
    try:
        transport = side.transport(client, settings, name)
        for _ in range(200):
            found = await transport.reclaim()
            if found.deliveries or found.poison:
                return len(found.deliveries)
            await asyncio.sleep(0.05)
        return 0
    finally:
        await client.aclose()


def test_every_transaction_gets_one_result(redis_url, keys, sync_client, side):
    side.publish(make_transactions(25))

    stats = asyncio.run(run_pool(redis_url, side, settings_for(keys)))

    assert stats.results == 25
    assert sync_client.xlen(keys.results()) == 25
    assert side.outstanding() == 0


def test_dead_consumer_batch_reclaimed(redis_url, keys, sync_client, side):
    side.publish(make_transactions(25))
    settings = settings_for(keys)

    abandoned = asyncio.run(read_and_abandon(redis_url, side, settings))
    stats = asyncio.run(run_pool(redis_url, side, settings_for(keys)))

    assert abandoned > 0
    assert stats.claimed == abandoned
    assert sync_client.xlen(keys.results()) == 25
    transaction_ids = {fields["transaction_id"] for _, fields in sync_client.xrange(keys.results())}
    assert transaction_ids == {f"t-{index}" for index in range(25)}
    assert side.outstanding() == 0


def test_invalid_entry_dead_lettered(redis_url, keys, sync_client, side):
    side.publish(make_transactions(3))
    side.publish_invalid()

    stats = asyncio.run(run_pool(redis_url, side, settings_for(keys)))

    assert stats.results == 3
    assert stats.dead_letters == 1
    letters = sync_client.xrange(keys.dead_letters)
    assert len(letters) == 1
    assert '"reason":"invalid entry"' in letters[0][1]["data"]
    assert side.outstanding() == 0


def test_poison_after_max_deliveries(redis_url, keys, sync_client, side):
    side.publish(make_transactions(3, users=1))  # one user: one queue item, one micro-batch
    settings = settings_for(keys, max_deliveries=2, batch_size=10)

    first = asyncio.run(read_and_abandon(redis_url, side, settings))          # delivery 1
    second = asyncio.run(reclaim_when_expired(redis_url, side, settings))     # delivery 2
    stats = asyncio.run(run_pool(redis_url, side, settings_for(keys, max_deliveries=2)))  # delivery 3: poison

    assert first == 3
    assert second == 3
    assert stats.results == 0
    assert stats.dead_letters == 3
    letters = [fields["data"] for _, fields in sync_client.xrange(keys.dead_letters)]
    assert len(letters) == 3
    assert all('"reason":"poison message"' in letter for letter in letters)
    assert sync_client.xlen(keys.results()) == 0
    assert side.outstanding() == 0


# The Modal Queue side only.


def test_partition_for_is_stable_and_short():
    long_user = "u" * 200
    assert partition_for(long_user, 16) == partition_for(long_user, 16)
    assert len(partition_for(long_user, 16).encode()) <= 64
    assert {partition_for(f"user-{index}", 4) for index in range(100)} <= {"p0", "p1", "p2", "p3"}


def test_publish_to_queue_rejects_bad_sizes():
    queue = InMemoryQueueStandIn()
    with pytest.raises(ValueError, match="batch_size 0"):
        asyncio.run(publish_to_queue(queue, make_transactions(1), batch_size=0))
    with pytest.raises(ValueError, match="partitions 0"):
        asyncio.run(publish_to_queue(queue, make_transactions(1), partitions=0))


def test_publish_to_queue_groups_by_user():
    queue = InMemoryQueueStandIn()
    published = asyncio.run(publish_to_queue(queue, make_transactions(10), batch_size=100, partitions=1))

    items = queue.get_many(10, block=False, partition="p0")

    assert published == 10
    assert len(items) == 1
    entry_ids = [entry_id for entry_id, _ in items[0]["entries"]]
    assert len(set(entry_ids)) == 10
    assert all(entry_id.split("-")[0].isdigit() and entry_id.split("-")[1].isdigit() for entry_id in entry_ids)


def test_standin_get_many_times_out():
    queue = InMemoryQueueStandIn()
    with pytest.raises(stdlib_queue.Empty):
        queue.get_many(1, block=True, timeout=0.05, partition="p0")
    assert queue.get_many(1, block=False, partition="p0") == []


def test_standin_rejects_long_partition_key():
    queue = InMemoryQueueStandIn()
    with pytest.raises(InvalidError):
        queue.put("x", partition="k" * 65)
    with pytest.raises(InvalidError):
        queue.put("x", partition="")


def test_give_back_requeues_with_same_count(redis_url, keys, sync_client):
    side = QueueSide(sync_client, keys)
    side.publish(make_transactions(2))
    settings = settings_for(keys, batch_size=10)

    async def take_and_give_back():
        client = connect_async(redis_url)
        try:
            transport = side.transport(client, settings, "one")
            deliveries = []
            while not deliveries:
                deliveries = await transport.read(10, 100)
            await transport.give_back([delivery.entry_id for delivery in deliveries])
            return len(deliveries)
        finally:
            await client.aclose()

    given_back = asyncio.run(take_and_give_back())
    items = []
    for partition in ("p0", "p1", "p2", "p3"):
        items += side.queue.get_many(10, block=False, partition=partition)
    returned = [item for item in items if item["deliveries"] == 0]

    assert given_back > 0
    assert sum(len(item["entries"]) for item in items) == 2
    assert sum(len(item["entries"]) for item in returned) == 2
    assert sync_client.zcard(f"{keys.base}queue:lease-expiry") == 0


def fill_partition(queue, partition: str) -> None:
    queue.put_many([{"entries": [], "deliveries": 0}] * MAX_PARTITION_ITEMS, partition=partition)


def test_publish_to_queue_full_partition_times_out():
    queue = InMemoryQueueStandIn()
    transactions = make_transactions(6, users=2)
    full = partition_for(transactions[1].user_id, PARTITIONS)
    fill_partition(queue, full)

    with pytest.raises(QueueFullError, match=f"partition '{full}' of the queue stayed full for 0.2 s") as caught:
        asyncio.run(publish_to_queue(queue, transactions, batch_size=4, partitions=PARTITIONS,
                                     put_timeout_seconds=0.2))

    others = sum(1 for transaction in transactions if partition_for(transaction.user_id, PARTITIONS) != full)
    assert caught.value.published <= others
    assert queue.len(partition=full) == MAX_PARTITION_ITEMS


def test_publish_to_queue_rejects_zero_timeout():
    with pytest.raises(ValueError, match="put_timeout_seconds 0 must be more than 0"):
        asyncio.run(publish_to_queue(InMemoryQueueStandIn(), make_transactions(1), put_timeout_seconds=0))


def test_give_back_full_partition_keeps_lease(redis_url, keys, sync_client, monkeypatch):
    monkeypatch.setattr(modal_queue, "GIVE_BACK_TIMEOUT_SECONDS", 0.1)
    side = QueueSide(sync_client, keys)
    side.publish(make_transactions(1, users=1))
    partition = partition_for("user-0", PARTITIONS)
    settings = settings_for(keys, batch_size=10)

    async def take_and_give_back():
        client = connect_async(redis_url)
        try:
            transport = side.transport(client, settings, "one")
            deliveries = []
            while not deliveries:
                deliveries = await transport.read(10, 100)
            fill_partition(side.queue, partition)
            await transport.give_back([delivery.entry_id for delivery in deliveries])
            return len(deliveries)
        finally:
            await client.aclose()

    given_back = asyncio.run(take_and_give_back())

    assert given_back == 1
    assert side.queue.len(partition=partition) == MAX_PARTITION_ITEMS
    assert sync_client.zcard(f"{keys.base}queue:lease-expiry") == 1


def test_settle_releases_lease_at_once(redis_url, keys, sync_client):
    side = QueueSide(sync_client, keys)
    side.publish(make_transactions(2, users=1))
    settings = settings_for(keys)

    async def take_and_settle():
        client = connect_async(redis_url)
        try:
            transport = side.transport(client, settings, "one")
            deliveries = []
            while not deliveries:
                deliveries = await transport.read(10, 100)
            held = await client.zcard(f"{keys.base}queue:lease-expiry")
            await transport.settle([], [], [delivery.entry_id for delivery in deliveries])
            return held
        finally:
            await client.aclose()

    held_before = asyncio.run(take_and_settle())

    assert held_before == 1
    assert sync_client.zcard(f"{keys.base}queue:lease-expiry") == 0
    assert sync_client.keys(f"{keys.base}queue:lease:*") == []


@pytest.mark.parametrize("protocol", [2, 3])
async def test_stream_read_either_protocol(redis_url, keys, sync_client, protocol):
    sync_client.xgroup_create(keys.transactions, keys.group(), id="0", mkstream=True)
    first = sync_client.xadd(keys.transactions, {"data": "one", "extra": "x"})
    second = sync_client.xadd(keys.transactions, {"data": "two"})
    client = aioredis.Redis.from_url(redis_url, protocol=protocol)
    try:
        transport = RedisStreamTransport(client, ConsumerSettings(keys=keys), "c-1")
        read = await transport.read(10, 100)
        empty = await transport.read(10, 100)
    finally:
        await client.aclose()

    assert [delivery.entry_id for delivery in read] == [first, second]
    assert read[0].fields == {b"data": b"one", b"extra": b"x"}
    assert read[1].fields == {b"data": b"two"}
    assert empty == []


def test_deliveries_skip_deleted_entries():
    from consumer.transports.redis_stream import deliveries_of

    entries = [[b"1-0", [b"data", b"a"]], [b"2-0", None], [b"3-0", [b"data", b"c", b"k", b"v"]]]

    for reply in ([[b"stream", entries]], {b"stream": entries}):
        deliveries = deliveries_of(reply)
        assert [delivery.entry_id for delivery in deliveries] == ["1-0", "3-0"]
        assert deliveries[1].fields == {b"data": b"c", b"k": b"v"}
    assert deliveries_of(None) == []
    assert deliveries_of([]) == []
