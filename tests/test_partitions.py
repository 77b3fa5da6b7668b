"""Partitioned streams: routing by user id, leases, per-user order and takeover.

Every test runs against a real server (the ``redis_url`` fixtures). Pools
run in one event loop as separate consumers, each with its own client, and
the results stream is read afterwards: per user, results must come out in
the order the transactions were published.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import redis

from conftest import ROOT, invoke_cli, one_server
from consumer.pool import ConsumerPool
from consumer.recommenders import InProcessRecommender
from consumer.settings import ConsumerSettings
from consumer.transports.partitioned import PartitionedStreamTransport
from producer.publisher import Producer
from rewardpilot.connection import connect_async
from rewardpilot.models import Transaction
from rewardpilot.partitions import (
    PartitionCountError, agree_count, count_key, lease_key, partition_of, partition_stream,
)
from rewardpilot.results import read_results
from rewardpilot.status import collect_status
from rewardpilot.streams import StreamKeys

RUN_LIMIT_SECONDS = 60  # bounds every pool run, so a hung pool fails the test instead of the suite
MERCHANTS = [("Whole Foods", "5411", "groceries"), ("Shell", "5541", "gas"), ("Chipotle", "5814", "dining")]


def make_transactions(count: int, users: list[str], prefix: str = "t") -> list[Transaction]:
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    return [
        Transaction(
            transaction_id=f"{prefix}-{index:05d}", user_id=users[index % len(users)],
            merchant=MERCHANTS[index % 3][0], mcc=MERCHANTS[index % 3][1], category=MERCHANTS[index % 3][2],
            amount_usd=Decimal(2500 + 37 * index) / 100, timestamp=start + timedelta(minutes=index),
        )
        for index in range(count)
    ]


def settings_for(keys, **overrides) -> ConsumerSettings:
    values = dict(keys=keys, workers=4, batch_size=5, block_ms=100, drain=True, partitions=4,
                  lease_ms=600, visibility_timeout_ms=300, claim_interval_seconds=0.1,
                  shutdown_grace_seconds=2)
    values.update(overrides)
    return ConsumerSettings(**values)


class JitteryRecommender:
    """The in-process engine behind a random delay of 0 to 20 ms per batch.

    Without it, batches finish in the order they start, and a transport that
    handed out two batches of one partition at once would still pass.
    """

    name = "in-process"

    def __init__(self, seed: int):
        self.engine = InProcessRecommender()
        self.random = random.Random(seed)

    async def recommend(self, items):
        await asyncio.sleep(self.random.uniform(0, 0.02))
        return await self.engine.recommend(items)

    async def aclose(self) -> None:
        await self.engine.aclose()


async def run_pools(url, settings: ConsumerSettings, names: list[str]):
    """Run one pool per name at once, each its own consumer with its own client, until drained."""
    clients = [connect_async(url, block_ms=settings.block_ms) for _ in names]
    try:
        pools = []
        for seed, (client, name) in enumerate(zip(clients, names)):
            own = ConsumerSettings(**{**settings.__dict__, "consumer": name})
            pools.append(ConsumerPool(client, own, JitteryRecommender(seed),
                                      transport=PartitionedStreamTransport(client, own, name)))
        return await asyncio.wait_for(asyncio.gather(*(pool.run() for pool in pools)), RUN_LIMIT_SECONDS)
    finally:
        for client in clients:
            await client.aclose()


def results_by_user(client, stream: str) -> dict[str, list[str]]:
    order: dict[str, list[str]] = {}
    for result in read_results(client, stream):
        order.setdefault(result.user_id, []).append(result.transaction_id)
    return order


def published_by_user(transactions: list[Transaction]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = {}
    for transaction in transactions:
        order.setdefault(transaction.user_id, []).append(transaction.transaction_id)
    return order


# Routing


def test_partition_of_standard_check_value():
    # 0xCBF43926 = 3421780262 is the published CRC-32 check value of "123456789".
    assert partition_of("123456789", 8) == 3421780262 % 8 == 6
    assert partition_of("123456789", 7) == 5
    assert partition_of("", 8) == 0


def test_partition_of_same_in_other_processes():
    users = [f"user-{index}" for index in range(20)]
    in_this_process = [partition_of(user, 8) for user in users]
    code = ("from rewardpilot.partitions import partition_of; "
            f"print([partition_of(u, 8) for u in {users!r}])")
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True, cwd=ROOT).stdout
        assert output.strip() == str(in_this_process)


def test_partition_of_spreads_users():
    counts = [0] * 8
    for index in range(8000):
        counts[partition_of(f"user-{index}", 8)] += 1
    # 1000 expected per partition; CRC-32 spreads these ids well within 15 %.
    assert min(counts) > 850
    assert max(counts) < 1150


def test_count_rejects_invalid_values(sync_client, keys):
    for bad in (0, -1, 1025, True, "4"):
        with pytest.raises(PartitionCountError) as caught:
            agree_count(sync_client, keys, bad)
        assert repr(bad) in str(caught.value)
    assert sync_client.get(count_key(keys)) is None


def test_one_partition_uses_single_stream(sync_client, keys):
    transactions = make_transactions(12, ["alice", "bob", "carol"])
    Producer(sync_client, keys, max_backlog=None).publish_many(transactions)

    assert sync_client.xlen(keys.transactions) == 12
    assert sync_client.exists(f"{keys.transactions}:p0") == 0
    assert sync_client.get(count_key(keys)) == "1"


def test_producer_routes_each_user_to_one_stream(sync_client, keys):
    users = [f"user-{index}" for index in range(10)]
    transactions = make_transactions(60, users)
    summary = Producer(sync_client, keys, max_backlog=None, partitions=4).publish_many(transactions)
    assert summary.published == 60
    assert sync_client.get(count_key(keys)) == "4"
    assert sync_client.exists(keys.transactions) == 0

    seen: dict[str, list[str]] = {}
    for partition in range(4):
        stream = f"{keys.transactions}:p{partition}"
        for _entry_id, fields in sync_client.xrange(stream):
            transaction = Transaction.model_validate_json(fields["data"])
            assert partition_of(transaction.user_id, 4) == partition
            seen.setdefault(transaction.user_id, []).append(transaction.transaction_id)
    assert seen == published_by_user(transactions)


def test_producer_dedup_across_partitions(sync_client, keys):
    transactions = make_transactions(8, ["alice", "bob"])
    producer = Producer(sync_client, keys, max_backlog=None, partitions=2)
    assert producer.publish_many(transactions).published == 8
    again = producer.publish_many(transactions)
    assert again.published == 0
    assert again.duplicates == 8


def test_mismatched_count_rejected(sync_client, keys):
    Producer(sync_client, keys, max_backlog=None, partitions=4).publish_many(make_transactions(2, ["alice"]))

    with pytest.raises(PartitionCountError) as caught:
        Producer(sync_client, keys, max_backlog=None, partitions=8).publish_many(make_transactions(2, ["bob"]))
    message = str(caught.value)
    assert "partition count 8" in message
    assert "4 partitions stored" in message
    assert "--partitions 4" in message
    assert agree_count(sync_client, keys) == 4


def test_consumer_with_other_count_rejected(redis_url, sync_client, keys):
    agree_count(sync_client, keys, 4)

    async def open_with_eight():
        client = connect_async(redis_url)
        try:
            await PartitionedStreamTransport(client, settings_for(keys, partitions=8), "c8").open()
        finally:
            await client.aclose()

    with pytest.raises(PartitionCountError, match="partition count 8"):
        asyncio.run(open_with_eight())
    assert sync_client.exists(lease_key(keys, keys.group(), 0)) == 0


@one_server
def test_cli_rejects_other_count(cli_env, sync_client, keys):
    agree_count(sync_client, keys, 4)
    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--partitions", "2", "--drain"], cli_env)
    assert completed.returncode == 2
    assert "partition count 2" in completed.stdout + completed.stderr


# Per-user order


def test_one_user_order_two_consumers(redis_url, sync_client, keys):
    users = ["alice", "bob", "carol", "dave", "erin", "frank"]
    transactions = make_transactions(240, users)
    Producer(sync_client, keys, max_backlog=None, partitions=4).publish_many(transactions)

    stats = asyncio.run(run_pools(redis_url, settings_for(keys), ["c1", "c2"]))

    assert sum(s.results for s in stats) == 240
    assert sync_client.xlen(keys.results()) == 240
    assert results_by_user(sync_client, keys.results()) == published_by_user(transactions)
    for partition in range(4):
        stream = partition_stream(keys, 4, partition)
        assert sync_client.xpending(stream, keys.group())["pending"] == 0


def test_one_user_four_consumers_same_as_one(redis_url, sync_client, keys):
    transactions = make_transactions(120, ["alice"])
    Producer(sync_client, keys, max_backlog=None, partitions=4).publish_many(transactions)

    asyncio.run(run_pools(redis_url, settings_for(keys, run="one"), ["solo"]))
    asyncio.run(run_pools(redis_url, settings_for(keys, run="four", workers=2),
                          ["c1", "c2", "c3", "c4"]))

    one = list(read_results(sync_client, keys.results("one")))
    four = list(read_results(sync_client, keys.results("four")))
    expected = [transaction.transaction_id for transaction in transactions]
    assert [result.transaction_id for result in one] == expected
    assert [result.transaction_id for result in four] == expected
    for single, shared in zip(one, four):
        assert shared.recommended_card == single.recommended_card
        assert shared.rewards == single.rewards
        assert shared.spend_updates == single.spend_updates


# Leases


async def read_and_die(url, settings, name="dies") -> list[str]:
    """Take leases and read one batch, then stop renewing without releasing or settling."""
    client = connect_async(url, block_ms=settings.block_ms)
    transport = PartitionedStreamTransport(client, settings, name)
    try:
        await transport.open()
        deliveries = []
        for _ in range(50):
            deliveries = await transport.read(settings.batch_size, settings.block_ms)
            if deliveries:
                break
        return [delivery.entry_id for delivery in deliveries]
    finally:
        transport._closing.set()  # dies: no more renewals, no release
        await transport._lease_task
        await client.aclose()


def test_lease_taken_over_after_holder_dies(redis_url, sync_client, keys):
    users = ["alice", "bob", "carol", "dave"]
    transactions = make_transactions(80, users)
    Producer(sync_client, keys, max_backlog=None, partitions=2).publish_many(transactions)
    settings = settings_for(keys, partitions=2, lease_ms=800)

    abandoned = asyncio.run(read_and_die(redis_url, settings))
    assert len(abandoned) == 5
    holders = {sync_client.get(lease_key(keys, keys.group(), p)) for p in range(2)}
    assert holders == {"dies"}

    asyncio.run(run_pools(redis_url, settings, ["survivor"]))

    assert sync_client.xlen(keys.results()) == 80
    assert results_by_user(sync_client, keys.results()) == published_by_user(transactions)
    for partition in range(2):
        stream = partition_stream(keys, 2, partition)
        assert sync_client.xpending(stream, keys.group())["pending"] == 0
    assert sync_client.xlen(keys.dead_letters) == 0


def test_poison_dead_lettered_on_takeover(redis_url, sync_client, keys):
    transactions = make_transactions(10, ["alice"])
    Producer(sync_client, keys, max_backlog=None, partitions=2).publish_many(transactions)
    settings = settings_for(keys, partitions=2, lease_ms=500, max_deliveries=1)

    abandoned = asyncio.run(read_and_die(redis_url, settings))
    asyncio.run(run_pools(redis_url, settings, ["survivor"]))

    # Read once by the dead consumer and once more by the survivor: 2 > 1 delivery.
    letters = sync_client.xrange(keys.dead_letters)
    assert [fields["transaction_id"] for _, fields in letters] == [f"t-{i:05d}" for i in range(5)]
    assert len(abandoned) == 5
    assert [r.transaction_id for r in read_results(sync_client, keys.results())] == \
        [f"t-{i:05d}" for i in range(5, 10)]


async def open_transports(url, settings, names):
    clients = [connect_async(url, block_ms=settings.block_ms) for _ in names]
    transports = [PartitionedStreamTransport(c, ConsumerSettings(**{**settings.__dict__, "consumer": n}), n)
                  for c, n in zip(clients, names)]
    for transport in transports:
        await transport.open()
    return clients, transports


async def balanced_shares(url, settings, names):
    """Open one transport per name, balance until stable, close one; return the leases held each time."""
    clients, transports = await open_transports(url, settings, names)
    try:
        for _ in range(6):
            for transport in transports:
                await transport.balance()
        first = [set(transport.held) for transport in transports]

        await transports[0].close()
        for _ in range(6):
            for transport in transports[1:]:
                await transport.balance()
        after = [set(transport.held) for transport in transports[1:]]
        return first, after
    finally:
        for transport in transports[1:]:
            await transport.close()
        for client in clients:
            await client.aclose()


def test_balance_eight_partitions_four_consumers(redis_url, sync_client, keys):
    agree_count(sync_client, keys, 8)
    settings = settings_for(keys, partitions=8, lease_ms=5000)

    first, after = asyncio.run(balanced_shares(redis_url, settings, ["c1", "c2", "c3", "c4"]))

    assert [len(held) for held in first] == [2, 2, 2, 2]
    assert set().union(*first) == set(range(8))
    # Three consumers left: ceil(8 / 3) = 3 each at most, and every partition still has a holder.
    assert all(len(held) <= 3 for held in after)
    assert set().union(*after) == set(range(8))
    assert sum(len(held) for held in after) == 8


def test_leases_released_on_close(redis_url, sync_client, keys):
    agree_count(sync_client, keys, 2)
    settings = settings_for(keys, partitions=2, lease_ms=5000)

    async def open_and_close():
        clients, transports = await open_transports(redis_url, settings, ["c1"])
        held = set(transports[0].held)
        await transports[0].close()
        await clients[0].aclose()
        return held

    assert asyncio.run(open_and_close()) == {0, 1}
    assert sync_client.exists(lease_key(keys, keys.group(), 0), lease_key(keys, keys.group(), 1)) == 0


def test_status_shows_partition_holders(redis_url, sync_client, keys):
    Producer(sync_client, keys, max_backlog=None, partitions=2).publish_many(make_transactions(6, ["a", "b"]))
    settings = settings_for(keys, partitions=2, lease_ms=5000)

    async def hold():
        clients, transports = await open_transports(redis_url, settings, ["holder"])
        return clients[0], transports[0]

    async def scenario():
        client, transport = await hold()
        try:
            return collect_status(sync_client, keys)
        finally:
            await transport.close()
            await client.aclose()

    snapshot = asyncio.run(scenario())
    assert [p["partition"] for p in snapshot["partitions"]] == [0, 1]
    for described in snapshot["partitions"]:
        assert described["groups"][0]["lease_holder"] == "holder"
    assert sum(p["length"] for p in snapshot["partitions"]) == 6
    assert snapshot["transactions"]["length"] == 0
    assert snapshot["transactions_total"] == 6


def test_status_single_stream_has_no_partitions(sync_client, keys):
    Producer(sync_client, keys, max_backlog=None).publish_many(make_transactions(3, ["a"]))
    snapshot = collect_status(sync_client, keys)
    assert snapshot["partitions"] == []
    assert snapshot["transactions_total"] == 3


# Exactly once under a killed consumer


@pytest.mark.slow
def test_results_once_after_consumer_killed(one_redis_url, one_keys, tmp_path):
    from test_chaos import start_consumer, wait_until

    client = redis.Redis.from_url(one_redis_url, decode_responses=True)
    try:
        users = [f"user-{index}" for index in range(12)]
        transactions = make_transactions(600, users)
        Producer(client, one_keys, max_backlog=None, partitions=4).publish_many(transactions)

        victim = start_consumer(one_redis_url, one_keys, tmp_path, "victim", "--partitions", "4",
                                "--lease", "1", "--batch-size", "10")
        assert wait_until(lambda: client.xlen(one_keys.results()) >= 50, attempts=300)
        victim.kill()
        victim.wait(timeout=10)

        drainer = start_consumer(one_redis_url, one_keys, tmp_path, "drainer", "--partitions", "4",
                                 "--lease", "1", "--drain", "--batch-size", "50")
        assert drainer.wait(timeout=120) == 0, (tmp_path / "drainer.log").read_text()[-3000:]

        ids = [result.transaction_id for result in read_results(client, one_keys.results())]
        assert len(ids) == 600
        assert len(set(ids)) == 600
        assert results_by_user(client, one_keys.results()) == published_by_user(transactions)
    finally:
        client.close()


def write_csv(path, transactions: list[Transaction]) -> None:
    lines = ["transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp"]
    for t in transactions:
        lines.append(f"{t.transaction_id},{t.user_id},{t.merchant},{t.category},{t.amount_usd},{t.mcc},"
                     f"{t.timestamp.isoformat()}")
    path.write_text("\n".join(lines) + "\n")


@one_server
def test_cli_consume_adopts_stored_count(cli_env, sync_client, keys, tmp_path):
    transactions = make_transactions(30, ["alice", "bob", "carol", "dave"])
    write_csv(tmp_path / "tx.csv", transactions)

    published = invoke_cli(["--prefix", keys.prefix, "publish", str(tmp_path / "tx.csv"), "--partitions", "3"],
                           cli_env)
    assert published.returncode == 0, published.stderr[-2000:]
    assert sync_client.get(count_key(keys)) == "3"
    assert sum(sync_client.xlen(partition_stream(keys, 3, p)) for p in range(3)) == 30

    consumed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100", "--lease", "1"],
                          cli_env)
    assert consumed.returncode == 0, consumed.stderr[-2000:]
    assert results_by_user(sync_client, keys.results()) == published_by_user(transactions)


@one_server
def test_cli_run_with_partitions(cli_env, sync_client, keys, tmp_path):
    transactions = make_transactions(20, ["alice", "bob"])
    write_csv(tmp_path / "tx.csv", transactions)

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(tmp_path / "tx.csv"), "--job", "j1",
                            "--partitions", "2", "--json"], cli_env)
    assert completed.returncode == 0, completed.stderr[-2000:]
    job_keys = StreamKeys(prefix=keys.prefix, job="j1")
    assert sync_client.get(count_key(job_keys)) == "2"
    assert results_by_user(sync_client, job_keys.results()) == published_by_user(transactions)


def test_replay_reads_every_partition(redis_url, sync_client, keys):
    from rewardpilot.replay import replay

    transactions = make_transactions(40, ["alice", "bob", "carol"])
    Producer(sync_client, keys, max_backlog=None, partitions=3).publish_many(transactions)

    summary = replay(redis_url, keys, start="0", run="again")

    assert summary.results == 40
    assert results_by_user(sync_client, keys.results("again")) == published_by_user(transactions)
    for partition in range(3):
        stream = partition_stream(keys, 3, partition)
        assert "replay:again" not in [g["name"] for g in sync_client.xinfo_groups(stream)]


def test_single_stream_consumer_rejected_on_partitioned_prefix(redis_url, sync_client, keys):
    from consumer.transports import RedisStreamTransport

    agree_count(sync_client, keys, 4)

    async def open_single():
        client = connect_async(redis_url)
        try:
            await RedisStreamTransport(client, settings_for(keys, partitions=1), "single").open()
        finally:
            await client.aclose()

    with pytest.raises(PartitionCountError, match="partition count 1 does not match the 4 partitions"):
        asyncio.run(open_single())
