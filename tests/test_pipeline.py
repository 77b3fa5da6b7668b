"""The consumer pool end to end against real servers: publish, consume, settle."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import redis
import redis.asyncio as aioredis
import structlog.testing

from consumer.pool import GC_YOUNG_THRESHOLD, ConsumerPool
from consumer.recommenders import InProcessRecommender
from consumer.settings import ConsumerSettings
from consumer.settle import Settler
from consumer.transports import Delivery, RedisStreamTransport
from consumer.transports.base import Reclaimed
from producer import Producer
from rewardpilot.codec import decode_result
from rewardpilot.models import Transaction
from rewardpilot.results import read_results, subscribe
from rewardpilot.status import stream_status
from rewardpilot.streams import StreamKeys

MERCHANTS = [
    ("Whole Foods Market", "5411", "groceries"),
    ("Starbucks", "5814", "coffee"),
    ("Shell", "5541", "gas"),
    ("Delta Air Lines", "3058", "airfare"),
    ("CVS Pharmacy", "5912", "drugstore"),
]


def transactions(count: int, *, users: int = 7, prefix: str = "t"):
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    for index in range(count):
        merchant, mcc, category = MERCHANTS[index % len(MERCHANTS)]
        yield Transaction(
            transaction_id=f"{prefix}-{index:06d}", user_id=f"user-{index % users}", merchant=merchant,
            category=category, amount_usd=Decimal(1000 + index % 9000) / 100, mcc=mcc,
            timestamp=start + timedelta(minutes=index),
        )


def publish(url: str, keys, items) -> int:
    client = redis.Redis.from_url(url)
    try:
        return Producer(client, keys, max_backlog=None).publish_many(items).published
    finally:
        client.close()


async def drain(url: str, settings: ConsumerSettings, **pool_options):
    # A drain ends only after one empty read, which blocks for block_ms. The 1000 ms
    # default would add a second to every drain and test nothing more.
    settings.drain = True
    settings.block_ms = 100
    client = aioredis.Redis.from_url(url)
    pool = ConsumerPool(client, settings, **pool_options)
    try:
        return await asyncio.wait_for(pool.run(), timeout=120)
    finally:
        await client.aclose()


def pending_count(client: redis.Redis, stream: str, group: str) -> int:
    return client.xpending(stream, group)["pending"]


@pytest.mark.slow
async def test_ten_thousand_give_ten_thousand_results(redis_url, keys, sync_client):
    assert publish(redis_url, keys, transactions(10_000)) == 10_000

    stats = await drain(redis_url, ConsumerSettings(keys=keys, workers=4, batch_size=500))

    assert stats.results == 10_000
    assert stats.dead_letters == 0
    assert sync_client.xlen(keys.results()) == 10_000
    assert pending_count(sync_client, keys.transactions, keys.group()) == 0
    ids = {result.transaction_id for result in read_results(sync_client, keys.results())}
    assert len(ids) == 10_000


async def test_result_carries_entry_and_run(redis_url, keys, sync_client):
    publish(redis_url, keys, transactions(3))
    await drain(redis_url, ConsumerSettings(keys=keys, workers=1))

    results = list(read_results(sync_client, keys.results()))
    entry_ids = [entry_id for entry_id, _ in sync_client.xrange(keys.transactions)]

    assert [result.entry_id for result in results] == entry_ids
    assert all(result.run == "live" for result in results)
    assert all(result.published_at <= result.completed_at for result in results)
    assert all(result.wallet_source == "catalog" for result in results)


async def test_pool_run_raises_gc_threshold(redis_url, keys):
    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])
    try:
        publish(redis_url, keys, transactions(1))
        await drain(redis_url, ConsumerSettings(keys=keys, workers=1))
        young, *older = gc.get_threshold()
    finally:
        gc.set_threshold(*before)

    assert young == GC_YOUNG_THRESHOLD
    assert older == list(before[1:])


async def test_settle_twice_writes_once(redis_url, keys, sync_client):
    publish(redis_url, keys, transactions(20))
    sync_client.xgroup_create(keys.transactions, keys.group(), id="0")
    entries = sync_client.xreadgroup(keys.group(), "c1", {keys.transactions: ">"}, count=20)[0][1]
    deliveries = [Delivery(entry_id, fields) for entry_id, fields in entries]

    client = aioredis.Redis.from_url(redis_url)
    pool = ConsumerPool(client, ConsumerSettings(keys=keys))
    try:
        await pool.handle(deliveries)
        # The same entries again, as after a crash between settle and the next read.
        await pool.handle(deliveries)
    finally:
        await client.aclose()

    assert sync_client.xlen(keys.results()) == 20
    assert pool.stats.results == 20
    assert pool.stats.duplicates == 20
    assert pending_count(sync_client, keys.transactions, keys.group()) == 0


async def test_no_marker_without_its_result(redis_url, keys, sync_client):
    """A result whose XADD fails leaves no marker, so the redelivered entry still gets its result."""
    publish(redis_url, keys, transactions(3))
    sync_client.xgroup_create(keys.transactions, keys.group(), id="0")
    entries = sync_client.xreadgroup(keys.group(), "c1", {keys.transactions: ">"}, count=3)[0][1]
    deliveries = [Delivery(entry_id, fields) for entry_id, fields in entries]
    sync_client.set(keys.results(), "not a stream")  # every result's XADD now fails

    client = aioredis.Redis.from_url(redis_url)
    pool = ConsumerPool(client, ConsumerSettings(keys=keys))
    try:
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            await pool.handle(deliveries)
        assert list(sync_client.scan_iter(match=keys.result_marker("live", "*"), count=1000)) == []
        assert pending_count(sync_client, keys.transactions, keys.group()) == 3

        sync_client.delete(keys.results())
        await pool.handle(deliveries)
    finally:
        await client.aclose()

    results = sync_client.xrange(keys.results())
    assert len(results) == 3
    markers = {sync_client.get(keys.result_marker("live", fields["transaction_id"])) for _, fields in results}
    assert markers == {entry_id for entry_id, _ in entries}
    assert pending_count(sync_client, keys.transactions, keys.group()) == 0


async def test_invalid_entry_dead_lettered(redis_url, keys, sync_client):
    publish(redis_url, keys, transactions(2))
    sync_client.xadd(keys.transactions, {"data": '{"transaction_id": "bad", "amount_usd": "-3"}'})
    sync_client.xadd(keys.transactions, {"unexpected": "field"})

    stats = await drain(redis_url, ConsumerSettings(keys=keys, workers=1))

    assert stats.results == 2
    assert stats.dead_letters == 2
    letters = [json.loads(fields["data"]) for _, fields in sync_client.xrange(keys.dead_letters)]
    assert {letter["reason"] for letter in letters} == {"invalid entry"}
    assert any("amount_usd" in letter["error"] for letter in letters)
    assert any(letter["payload"] == {"unexpected": "field"} for letter in letters)
    assert pending_count(sync_client, keys.transactions, keys.group()) == 0


async def test_stale_pending_claimed_by_live_consumer(redis_url, keys, sync_client):
    publish(redis_url, keys, transactions(50))
    sync_client.xgroup_create(keys.transactions, keys.group(), id="0")
    # A consumer reads 30 entries and dies without settling them.
    sync_client.xreadgroup(keys.group(), "dead-consumer", {keys.transactions: ">"}, count=30)
    # The dead consumer's entries are idle past the visibility timeout before the pool starts. The
    # timeout stays long enough that the pool's own 20 entries are settled before they could be claimed.
    time.sleep(0.6)

    settings = ConsumerSettings(keys=keys, workers=1, visibility_timeout_ms=500, claim_interval_seconds=0.05)
    stats = await drain(redis_url, settings)

    assert stats.claimed == 30
    assert sync_client.xlen(keys.results()) == 50
    assert pending_count(sync_client, keys.transactions, keys.group()) == 0


class GreedyReclaim(RedisStreamTransport):
    """Claims everything stale in one recovery pass, as a long pending entries list can."""

    async def reclaim(self):
        found = Reclaimed()
        while True:
            more = await super().reclaim()
            found.deliveries += more.deliveries
            if not more.deliveries:
                return found


async def test_recovery_handles_micro_batch_sizes(redis_url, keys, sync_client):
    """A recovery pass that claims more than batch_size entries handles them in batches of batch_size."""
    publish(redis_url, keys, transactions(7))
    sync_client.xgroup_create(keys.transactions, keys.group(), id="0")
    read = sync_client.xreadgroup(keys.group(), "dead-consumer", {keys.transactions: ">"}, count=7)[0][1]
    # Idle for two minutes: stale now, and fresh again once the pool claims them.
    sync_client.xclaim(keys.transactions, keys.group(), "dead-consumer", 0,
                       [entry_id for entry_id, _ in read], idle=120_000)

    settings = ConsumerSettings(keys=keys, workers=1, batch_size=2, visibility_timeout_ms=60_000,
                                claim_interval_seconds=0.05, drain=True, block_ms=100)
    client = aioredis.Redis.from_url(redis_url)
    pool = ConsumerPool(client, settings, transport=GreedyReclaim(client, settings, "greedy"))
    sizes: list[int] = []
    handle = pool.handle

    async def recording_handle(deliveries):
        sizes.append(len(deliveries))
        await handle(deliveries)

    pool.handle = recording_handle
    try:
        stats = await asyncio.wait_for(pool.run(), timeout=60)
    finally:
        await client.aclose()

    assert stats.claimed == 7
    assert sizes and max(sizes) <= 2
    assert sum(sizes) == 7
    assert sync_client.xlen(keys.results()) == 7
    assert pending_count(sync_client, keys.transactions, keys.group()) == 0


class SlowRecommender:
    """The in-process engine behind a fixed delay, like a recommender stuck in retries."""

    name = "slow"

    def __init__(self, delay: float):
        self.delay = delay
        self.inner = InProcessRecommender()

    async def recommend(self, items):
        await asyncio.sleep(self.delay)
        return await self.inner.recommend(items)

    async def aclose(self) -> None:
        return None


async def test_long_held_batch_is_logged(redis_url, keys, sync_client):
    """A batch in hand past five visibility timeouts is logged with its first entry id."""
    publish(redis_url, keys, transactions(3))
    settings = ConsumerSettings(keys=keys, workers=1, batch_size=10, visibility_timeout_ms=300)

    with structlog.testing.capture_logs() as logs:
        stats = await drain(redis_url, settings, recommender=SlowRecommender(2.0))

    warnings = [event for event in logs if event["event"] == "batch still in hand, waiting on the recommender"]
    assert stats.results == 3
    assert warnings
    assert warnings[0]["count"] == 3
    assert warnings[0]["held_seconds"] >= 1.5
    assert warnings[0]["first_entry_id"] == sync_client.xrange(keys.transactions, count=1)[0][0]


async def test_keeper_stops_on_release_when_cancel_lost(redis_url, keys):
    """A keeper whose touch swallows the cancellation, as redis-py's asyncio client can, still stops."""
    touches = 0

    async def touch_losing_cancellation(entry_ids):
        nonlocal touches
        touches += 1
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            pass  # the command "completes" and the cancellation is gone

    client = aioredis.Redis.from_url(redis_url)
    pool = ConsumerPool(client, ConsumerSettings(keys=keys, visibility_timeout_ms=150))  # touches every 50 ms
    pool.transport.touch = touch_losing_cancellation
    released = asyncio.Event()
    keeper = asyncio.create_task(pool._keep_claimed(["1-1"], released))
    try:
        for _ in range(100):  # until the keeper is inside its first touch, at most 1 s
            if touches:
                break
            await asyncio.sleep(0.01)
        assert touches == 1

        released.set()
        keeper.cancel()
        done, _ = await asyncio.wait([keeper], timeout=2)

        assert done == {keeper}
        assert touches == 1
    finally:
        keeper.cancel()
        await client.aclose()


async def test_poison_message_dead_lettered(redis_url, keys, sync_client):
    publish(redis_url, keys, transactions(1))
    sync_client.xgroup_create(keys.transactions, keys.group(), id="0")
    entry_id = sync_client.xreadgroup(keys.group(), "c1", {keys.transactions: ">"}, count=1)[0][1][0][0]
    for _ in range(5):  # six deliveries so far; the pool's XAUTOCLAIM makes seven
        sync_client.xclaim(keys.transactions, keys.group(), "c1", 0, [entry_id])

    settings = ConsumerSettings(keys=keys, workers=1, visibility_timeout_ms=1,
                                claim_interval_seconds=0.05, max_deliveries=5)
    stats = await drain(redis_url, settings)

    assert stats.dead_letters == 1
    assert sync_client.xlen(keys.results()) == 0
    letter = json.loads(sync_client.xrange(keys.dead_letters)[0][1]["data"])
    assert letter["reason"] == "poison message"
    assert letter["transaction_id"] == "t-000000"
    assert letter["attempts"] == 7


async def test_trimmed_pending_entry_dead_lettered(redis_url, keys, sync_client):
    publish(redis_url, keys, transactions(3))
    sync_client.xgroup_create(keys.transactions, keys.group(), id="0")
    read = sync_client.xreadgroup(keys.group(), "dead-consumer", {keys.transactions: ">"}, count=3)[0][1]
    sync_client.xdel(keys.transactions, read[0][0])

    settings = ConsumerSettings(keys=keys, workers=1, visibility_timeout_ms=1, claim_interval_seconds=0.05)
    stats = await drain(redis_url, settings)

    assert stats.results == 2
    letters = [json.loads(fields["data"]) for _, fields in sync_client.xrange(keys.dead_letters)]
    assert [letter["reason"] for letter in letters] == ["deleted while pending"]
    assert letters[0]["entry_id"] == read[0][0]
    assert pending_count(sync_client, keys.transactions, keys.group()) == 0


async def test_user_filter_acks_other_users(redis_url, keys, sync_client):
    publish(redis_url, keys, transactions(14, users=7))
    settings = ConsumerSettings(keys=keys, workers=1, user_filter="user-3")

    stats = await drain(redis_url, settings)

    users = {result.user_id for result in read_results(sync_client, keys.results())}
    assert users == {"user-3"}
    assert stats.results == 2
    assert pending_count(sync_client, keys.transactions, keys.group()) == 0


async def test_consumer_leaves_group_when_idle(redis_url, keys, sync_client):
    publish(redis_url, keys, transactions(5))
    settings = ConsumerSettings(keys=keys, workers=1, consumer="leaving-consumer")
    await drain(redis_url, settings)

    consumers = sync_client.xinfo_consumers(keys.transactions, keys.group())
    assert [c["name"] for c in consumers] == []


async def test_subscribe_yields_new_results(redis_url, keys):
    client = aioredis.Redis.from_url(redis_url)
    received = []

    async def follow():
        async for result in subscribe(client, keys.results(), start="$", block_ms=100,
                                      idle_timeout_seconds=3):
            received.append(result)
            if len(received) == 4:
                return

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.3)
    publish(redis_url, keys, transactions(4))
    await drain(redis_url, ConsumerSettings(keys=keys, workers=1))
    await asyncio.wait_for(follower, timeout=10)
    await client.aclose()

    assert sorted(result.transaction_id for result in received) == [f"t-{i:06d}" for i in range(4)]


async def test_settler_skips_known_transaction(redis_url, keys, sync_client):
    publish(redis_url, keys, transactions(1))
    await drain(redis_url, ConsumerSettings(keys=keys, workers=1))
    fields = sync_client.xrange(keys.results())[0][1]
    result = decode_result(fields)

    client = aioredis.Redis.from_url(redis_url)
    settler = Settler(client, keys, run="live", group=keys.group(), marker_ttl_seconds=60)
    counts = await settler.settle([("0-1", result)], [])
    await client.aclose()

    assert counts.written == 0
    assert counts.duplicates == 1
    assert sync_client.xlen(keys.results()) == 1


@pytest.mark.parametrize("run", ["replay-a"])
async def test_second_run_gets_own_results(redis_url, keys, sync_client, run):
    publish(redis_url, keys, transactions(10))
    await drain(redis_url, ConsumerSettings(keys=keys, workers=1))
    await drain(redis_url, ConsumerSettings(keys=keys, workers=1, run=run))

    assert sync_client.xlen(keys.results()) == 10
    assert sync_client.xlen(keys.results(run)) == 10
    assert {r.run for r in read_results(sync_client, keys.results(run))} == {run}


async def test_job_consumer_logs_job(redis_url, keys):
    """A job's consumer reads the job's own streams as run "live", so its log lines also name the job."""
    job_keys = StreamKeys(prefix=keys.prefix, job="nightly-7")
    publish(redis_url, job_keys, transactions(3))

    with structlog.testing.capture_logs() as logs:
        stats = await drain(redis_url, ConsumerSettings(keys=job_keys, workers=1))

    started = [event for event in logs if event["event"] == "consumer started"]
    assert stats.results == 3
    assert started and started[0]["job"] == "nightly-7"
    assert started[0]["run"] == "live"


async def test_live_consumer_logs_no_job(redis_url, keys):
    publish(redis_url, keys, transactions(2))

    with structlog.testing.capture_logs() as logs:
        await drain(redis_url, ConsumerSettings(keys=keys, workers=1))

    started = [event for event in logs if event["event"] == "consumer started"]
    assert started and "job" not in started[0]


def test_status_oldest_pending_age_and_idle(redis_url, keys, sync_client):
    """The oldest pending entry's age counts from its publish, and its idle time from its last delivery."""
    publish(redis_url, keys, transactions(2))
    sync_client.xgroup_create(keys.transactions, keys.group(), id="0")
    time.sleep(0.3)
    sync_client.xreadgroup(keys.group(), "reader-1", {keys.transactions: ">"}, count=2)

    [group] = stream_status(sync_client, keys.transactions)["groups"]

    assert group["pending"] == 2
    assert group["oldest_pending_age_ms"] >= 300
    assert 0 <= group["oldest_pending_idle_ms"] < group["oldest_pending_age_ms"]
