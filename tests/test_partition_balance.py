"""Partition leases rebalance across consumers that start together, join later or die.

Every test runs against a real server. The multi-process tests start
``rewardpilot consume`` subprocesses on one server (``one_redis_url``), keep
publishing small chunks while they wait, and poll Redis in bounded loops.
Lease ownership is read from the lease keys, and what each consumer processed
from the stats line it prints when it stops.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import signal
import subprocess
import sys
import time

import redis

from conftest import ROOT
from consumer.pool import ConsumerPool
from consumer.settings import ConsumerSettings
from consumer.stats import PoolStats
from consumer.transports.leases import fair_share
from consumer.transports.partitioned import PartitionedStreamTransport
from producer.publisher import Producer
from rewardpilot.connection import connect_async
from rewardpilot.partitions import agree_count, lease_key, partition_stream
from rewardpilot.results import read_results
from test_chaos import consumer_env, wait_until
from test_partitions import (
    JitteryRecommender, make_transactions, published_by_user, read_and_die, results_by_user, settings_for,
)

PARTITIONS = 4
USERS = [f"user-{index}" for index in range(40)]  # enough ids to put users on every one of 4 partitions
CHUNK = 40  # transactions published per polling step while consumers run
RUN_LIMIT_SECONDS = 90  # bounds every in-process pool run


def holders(client: redis.Redis, keys, partitions: int = PARTITIONS) -> list[str | None]:
    return [client.get(lease_key(keys, keys.group(), partition)) for partition in range(partitions)]


def is_balanced(current: list[str | None], names: list[str]) -> bool:
    """Return True when every partition is held by one of ``names`` and each has its target."""
    if any(holder not in names for holder in current):
        return False
    return all(current.count(name) == fair_share(len(current), names, name) for name in names)


class Publisher:
    """Publishes numbered chunks of transactions over ``USERS`` to a partitioned prefix."""

    def __init__(self, client: redis.Redis, keys):
        self.client = client
        self.producer = Producer(client, keys, max_backlog=None, partitions=PARTITIONS)
        self.published = []

    def chunk(self) -> None:
        transactions = make_transactions(CHUNK, USERS, prefix=f"c{len(self.published) // CHUNK:04d}")
        assert self.producer.publish_many(transactions).published == CHUNK
        self.published.extend(transactions)


def start_consumer(url: str, keys, log_dir, name: str) -> subprocess.Popen:
    """Start ``rewardpilot consume`` on 4 partitions with 1 s leases; its stats line goes to stdout."""
    log_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "consume", "--name", name,
            "--partitions", str(PARTITIONS), "--lease", "1", "--block-ms", "100", "--batch-size", "20",
            "--visibility-timeout", "2"]
    with (log_dir / f"{name}.log").open("ab") as log:
        return subprocess.Popen(args, env=consumer_env(url, log_dir), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=log, text=True)


def stop_consumer(process: subprocess.Popen, log_dir, name: str) -> dict:
    """Stop a consumer with SIGTERM; return the stats it printed."""
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, (log_dir / f"{name}.log").read_text()[-3000:]
    return json.loads(output.strip().splitlines()[-1])


def publish_until(publisher: Publisher, condition, *, steps: int) -> bool:
    """Publish one chunk per step until ``condition()`` holds; return whether it did within ``steps``."""
    for _ in range(steps):
        if condition():
            return True
        publisher.chunk()
        time.sleep(0.1)
    return condition()


def pending_of(client: redis.Redis, keys, consumer: str) -> int:
    total = 0
    for partition in range(PARTITIONS):
        summary = client.xpending(partition_stream(keys, PARTITIONS, partition), keys.group())
        total += sum(int(row["pending"]) for row in summary["consumers"] if row["name"] == consumer)
    return total


def assert_every_entry_once(client: redis.Redis, keys, publisher: Publisher) -> None:
    ids = [result.transaction_id for result in read_results(client, keys.results())]
    assert len(ids) == len(publisher.published)
    assert len(set(ids)) == len(ids)
    assert results_by_user(client, keys.results()) == published_by_user(publisher.published)


# Targets


def test_fair_share_splits_partitions():
    names = ["p1", "p2", "p3"]
    assert [fair_share(4, names, name) for name in names] == [2, 1, 1]
    assert [fair_share(8, names[:2] + ["p4", "p5"], name) for name in ["p1", "p2", "p4", "p5"]] == [2, 2, 2, 2]
    assert [fair_share(3, ["a", "b", "c", "d", "e"], name) for name in "abcde"] == [1, 1, 1, 0, 0]


def test_fair_share_order_independent():
    assert fair_share(4, ["p3", "p1", "p2"], "p1") == 2
    assert fair_share(4, ["p3", "p1", "p2"], "p3") == 1


def test_fair_share_counts_missing_consumer():
    # A consumer that its own heartbeat has not reached yet still counts itself.
    assert fair_share(4, ["p1"], "p2") == 2
    assert fair_share(4, [], "p1") == 4


# Releasing busy partitions, one event loop


async def busy_release(url, settings):
    """Give ``a`` a batch in hand on every partition, open ``b``, then give the batches back one by one.

    Returns the leases ``a`` holds after each step, the partitions it hands
    out after marking, and what ``b`` holds and claimed at the end.
    """
    client_a = connect_async(url, block_ms=settings.block_ms)
    client_b = connect_async(url, block_ms=settings.block_ms)
    a = PartitionedStreamTransport(client_a, ConsumerSettings(**{**settings.__dict__, "consumer": "a"}), "a")
    b = PartitionedStreamTransport(client_b, ConsumerSettings(**{**settings.__dict__, "consumer": "b"}), "b")
    b_stats = PoolStats()
    b.attach_stats(b_stats)
    report = {}

    # Entry ids repeat across partition streams, so, as in the pool, each batch is read and
    # given back in one task context, which records the partition it came from.
    contexts: dict[int, contextvars.Context] = {}

    async def read_batch() -> tuple[int, list[str]]:
        context = contextvars.copy_context()
        batch = await asyncio.create_task(a.read(settings.batch_size, settings.block_ms), context=context)
        if not batch:
            return -1, []
        partition = a.streams.index(batch[0].stream)
        contexts[partition] = context
        return partition, [delivery.entry_id for delivery in batch]

    async def give_back(partition: int, entry_ids: list[str]) -> None:
        await asyncio.create_task(a.give_back(entry_ids), context=contexts[partition])

    try:
        await a.open()
        batches = {}
        for _ in range(PARTITIONS):
            partition, entry_ids = await read_batch()
            batches[partition] = entry_ids
        report["in_hand"] = set(a.in_hand)

        await b.open()
        await a.balance()
        report["marked"] = set(a._releasing)
        report["held_while_busy"] = set(a.held)

        # Each marked partition is released at the first balance after its batch is given back.
        report["held_after_give_back"] = []
        for partition in sorted(report["marked"], reverse=True):
            await give_back(partition, batches[partition])
            await a.balance()
            report["held_after_give_back"].append(set(a.held))

        # Partitions kept are read again, and marked ones are never handed out.
        handed = set()
        for partition in set(batches) - report["marked"]:
            await give_back(partition, batches[partition])
        for _ in range(PARTITIONS):
            partition, entry_ids = await read_batch()
            if entry_ids:
                handed.add(partition)
                await give_back(partition, entry_ids)
        report["handed_after_release"] = handed

        report["a_pending_on_released"] = 0
        for partition in report["marked"]:
            rows = await client_a.xpending_range(a.streams[partition], a.group, min="-", max="+", count=1000,
                                                 consumername="a")
            report["a_pending_on_released"] += len(rows)
        await b.balance()
        report["b_held"] = set(b.held)
        report["b_claimed"] = b_stats.claimed
    finally:
        await a.close()
        await b.close()
        await client_a.aclose()
        await client_b.aclose()
    return report


def test_busy_partitions_released_to_joiner(redis_url, sync_client, keys):
    Publisher(sync_client, keys).chunk()
    settings = settings_for(keys, partitions=PARTITIONS, lease_ms=60_000, batch_size=3)

    report = asyncio.run(busy_release(redis_url, settings))

    everything = set(range(PARTITIONS))
    assert report["in_hand"] == everything
    assert len(report["marked"]) == 2
    assert report["held_while_busy"] == everything
    first, second = sorted(report["marked"], reverse=True)
    assert report["held_after_give_back"] == [everything - {first}, everything - {first, second}]
    assert report["handed_after_release"] == everything - report["marked"]
    assert report["b_held"] == report["marked"]
    assert report["a_pending_on_released"] == 6
    assert report["b_claimed"] == 6


def test_takeover_counts_claimed(redis_url, sync_client, keys):
    transactions = make_transactions(40, USERS)
    Producer(sync_client, keys, max_backlog=None, partitions=2).publish_many(transactions)
    settings = settings_for(keys, partitions=2, lease_ms=500, workers=2)

    abandoned = asyncio.run(read_and_die(redis_url, settings))
    assert len(abandoned) == 5

    async def survive():
        client = connect_async(redis_url, block_ms=settings.block_ms)
        try:
            own = ConsumerSettings(**{**settings.__dict__, "consumer": "survivor"})
            pool = ConsumerPool(client, own, JitteryRecommender(1),
                                transport=PartitionedStreamTransport(client, own, "survivor"))
            return await asyncio.wait_for(pool.run(), RUN_LIMIT_SECONDS)
        finally:
            await client.aclose()

    stats = asyncio.run(survive())

    assert stats.claimed == 5
    assert stats.results == 40
    assert results_by_user(sync_client, keys.results()) == published_by_user(transactions)


async def join_later(url, keys, publisher: Publisher):
    """Run pools p1 and p2 until balanced, start p3, and run until p3 has its share and has results."""
    settings = settings_for(keys, partitions=PARTITIONS, lease_ms=600, drain=False, workers=2)
    client = publisher.client
    clients, pools, tasks = [], {}, {}

    def start(name: str, seed: int) -> None:
        async_client = connect_async(url, block_ms=settings.block_ms)
        own = ConsumerSettings(**{**settings.__dict__, "consumer": name})
        clients.append(async_client)
        pools[name] = ConsumerPool(async_client, own, JitteryRecommender(seed),
                                   transport=PartitionedStreamTransport(async_client, own, name))
        tasks[name] = asyncio.create_task(pools[name].run())

    async def publish_until_async(condition, steps: int) -> bool:
        for _ in range(steps):
            if condition():
                return True
            publisher.chunk()
            await asyncio.sleep(0.1)
        return condition()

    def all_results() -> bool:
        return client.xlen(keys.results()) >= len(publisher.published)

    try:
        start("p1", 1)
        start("p2", 2)
        two = await publish_until_async(lambda: is_balanced(holders(client, keys), ["p1", "p2"]), 300)
        seen = {"two": holders(client, keys)}
        start("p3", 3)
        three = await publish_until_async(
            lambda: is_balanced(holders(client, keys), ["p1", "p2", "p3"]) and pools["p3"].stats.results > 0,
            300)
        seen["three"] = holders(client, keys)
        for _ in range(300):
            if all_results():
                break
            await asyncio.sleep(0.1)
        for pool in pools.values():
            pool.stop()
        stats = await asyncio.wait_for(asyncio.gather(*tasks.values()), RUN_LIMIT_SECONDS)
        return two, three, seen, dict(zip(tasks, stats))
    finally:
        for task in tasks.values():
            task.cancel()
        for async_client in clients:
            await async_client.aclose()


def test_consumer_joining_later_gets_share(one_redis_url, one_keys):
    client = redis.Redis.from_url(one_redis_url, decode_responses=True)
    try:
        agree_count(client, one_keys, PARTITIONS)
        publisher = Publisher(client, one_keys)

        two, three, seen, stats = asyncio.run(join_later(one_redis_url, one_keys, publisher))

        assert two, seen["two"]
        assert three, seen["three"]
        assert stats["p3"].results > 0
        assert sum(s.results for s in stats.values()) == len(publisher.published)
        assert_every_entry_once(client, one_keys, publisher)
    finally:
        client.close()


# Consumer processes


def test_started_together_end_up_balanced(one_redis_url, one_keys, tmp_path):
    client = redis.Redis.from_url(one_redis_url, decode_responses=True)
    names = ["p1", "p2", "p3"]
    processes = {}
    try:
        agree_count(client, one_keys, PARTITIONS)
        publisher = Publisher(client, one_keys)
        processes = {name: start_consumer(one_redis_url, one_keys, tmp_path, name) for name in names}

        balanced = publish_until(publisher, lambda: is_balanced(holders(client, one_keys), names), steps=400)
        assert balanced, holders(client, one_keys)
        # Every consumer now has a partition lease, and users fall on every partition.
        for _ in range(5):
            publisher.chunk()
        assert wait_until(lambda: client.xlen(one_keys.results()) >= len(publisher.published), attempts=600)
        still = holders(client, one_keys)

        stats = {name: stop_consumer(processes.pop(name), tmp_path, name) for name in names}

        assert is_balanced(still, names), still
        for name in names:
            assert stats[name]["results"] > 0, (name, stats)
        assert sum(s["results"] for s in stats.values()) == len(publisher.published)
        assert_every_entry_once(client, one_keys, publisher)
    finally:
        for process in processes.values():
            process.kill()
            process.wait(timeout=10)
        client.close()


def test_killed_holder_taken_over_and_claimed(one_redis_url, one_keys, tmp_path):
    client = redis.Redis.from_url(one_redis_url, decode_responses=True)
    names = ["p1", "p2", "p3"]
    processes = {}
    try:
        agree_count(client, one_keys, PARTITIONS)
        publisher = Publisher(client, one_keys)
        processes = {name: start_consumer(one_redis_url, one_keys, tmp_path, name) for name in names}
        assert publish_until(publisher, lambda: is_balanced(holders(client, one_keys), names), steps=400)

        # Stop the victim, then publish. A read it left blocked on the server still receives the
        # entries, so they stay pending under its name. Otherwise let it run a moment and retry.
        victim = processes.pop("p3")
        left_pending = 0
        for attempt in range(200):
            victim.send_signal(signal.SIGSTOP)
            publisher.chunk()
            left_pending = pending_of(client, one_keys, "p3")
            if left_pending:
                break
            victim.send_signal(signal.SIGCONT)
            time.sleep(0.01 * (1 + attempt % 5))
        victim.kill()
        victim.wait(timeout=10)
        assert left_pending > 0

        survivors = ["p1", "p2"]
        taken_over = publish_until(publisher, lambda: is_balanced(holders(client, one_keys), survivors),
                                   steps=400)
        assert taken_over, holders(client, one_keys)
        assert wait_until(lambda: client.xlen(one_keys.results()) >= len(publisher.published), attempts=600)

        stats = {name: stop_consumer(processes.pop(name), tmp_path, name) for name in survivors}

        assert pending_of(client, one_keys, "p3") == 0
        # Rebalancing between the survivors can claim an entry once more, so at least, not exactly.
        assert sum(s["claimed"] for s in stats.values()) >= left_pending
        assert_every_entry_once(client, one_keys, publisher)
    finally:
        for process in processes.values():
            process.kill()
            process.wait(timeout=10)
        client.close()
