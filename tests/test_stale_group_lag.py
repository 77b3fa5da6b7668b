"""A consumer group's lag when XINFO GROUPS reports a stale one: status, the lag gauge and the drain check.

``XGROUP SETID ... ENTRIESREAD`` with a wrong count makes Redis and Valkey
report a lag for a group that has read every entry, as a stale entries-read
counter does after some restarts.
"""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis

from consumer.group import backlog
from consumer.metrics import PoolCollector
from consumer.pool import ConsumerPool
from consumer.settings import ConsumerSettings
from rewardpilot.status import collect_status, stream_status

GROUP = "rp-consumers"


def read_everything(client: redis.Redis, stream: str, entries: int) -> None:
    """Add ``entries`` entries, then have ``GROUP`` read and acknowledge all of them."""
    for index in range(entries):
        client.xadd(stream, {"data": str(index)})
    client.xgroup_create(stream, GROUP, id="0")
    for entry_id, _ in client.xreadgroup(GROUP, "c1", {stream: ">"})[0][1]:
        client.xack(stream, GROUP, entry_id)


def make_lag_stale(client: redis.Redis, stream: str, entries_read: int) -> None:
    """Keep the group's position at the stream's end but set its entries-read counter to ``entries_read``."""
    client.execute_command("XGROUP", "SETID", stream, GROUP, "$", "ENTRIESREAD", entries_read)


def redis_lag(client: redis.Redis, stream: str, group: str = GROUP):
    [info] = [info for info in client.xinfo_groups(stream) if info["name"] == group]
    return info["lag"]


def group_of(status: dict, name: str = GROUP) -> dict:
    [group] = [group for group in status["groups"] if group["name"] == name]
    return group


def gauges(pool: ConsumerPool, redis_url: str) -> dict[str, float]:
    collector = PoolCollector(pool, redis_url)
    return {sample.name: sample.value for family in collector.collect() for sample in family.samples}


def unstarted_pool(keys) -> ConsumerPool:
    # The pool is built but never run, so its client never connects.
    return ConsumerPool(aioredis.Redis(), ConsumerSettings(keys=keys, consumer="c1"))


def test_status_lag_zero_when_caught_up(sync_client, keys):
    read_everything(sync_client, keys.transactions, 5)
    make_lag_stale(sync_client, keys.transactions, 2)
    assert redis_lag(sync_client, keys.transactions) == 3  # the server's stale figure

    snapshot = collect_status(sync_client, keys)

    assert group_of(snapshot["transactions"])["lag"] == 0
    assert group_of(snapshot["transactions"])["pending"] == 0


def test_status_keeps_real_lag(sync_client, keys):
    stream = keys.transactions
    read_everything(sync_client, stream, 5)
    sync_client.xgroup_create(stream, "behind", id="0")
    sync_client.xreadgroup("behind", "c1", {stream: ">"}, count=2)

    status = stream_status(sync_client, stream)

    assert group_of(status, "behind")["lag"] == 3
    assert group_of(status)["lag"] == 0


def test_status_unknown_lag_stays_null(sync_client, keys):
    stream = keys.transactions
    ids = [sync_client.xadd(stream, {"data": str(index)}) for index in range(4)]
    sync_client.xgroup_create(stream, GROUP, id="0")
    sync_client.xreadgroup(GROUP, "c1", {stream: ">"}, count=2)
    sync_client.xdel(stream, ids[2])  # an unread entry, so Redis cannot count the rest
    assert redis_lag(sync_client, stream) is None

    assert group_of(stream_status(sync_client, stream))["lag"] is None


def test_status_after_xdel_of_unread_entry(sync_client, keys):
    """Redis 7.0 keeps reporting lag 1 here once the group has read on; Valkey 9.1 reports 0."""
    stream = keys.transactions
    ids = [sync_client.xadd(stream, {"data": str(index)}) for index in range(4)]
    sync_client.xgroup_create(stream, GROUP, id="0")
    sync_client.xreadgroup(GROUP, "c1", {stream: ">"}, count=2)
    sync_client.xdel(stream, ids[2])
    sync_client.xreadgroup(GROUP, "c1", {stream: ">"})

    assert group_of(stream_status(sync_client, stream))["lag"] == 0


def test_lag_gauge_zero_when_caught_up(sync_client, keys, redis_url):
    read_everything(sync_client, keys.transactions, 5)
    make_lag_stale(sync_client, keys.transactions, 1)
    assert redis_lag(sync_client, keys.transactions) == 4

    values = gauges(unstarted_pool(keys), redis_url)

    assert values["rewardpilot_consumer_group_lag"] == 0
    assert values["rewardpilot_consumer_group_pending"] == 0


def test_lag_gauge_counts_unknown_as_one(sync_client, keys, redis_url):
    stream = keys.transactions
    ids = [sync_client.xadd(stream, {"data": str(index)}) for index in range(4)]
    sync_client.xgroup_create(stream, GROUP, id="0")
    sync_client.xreadgroup(GROUP, "c1", {stream: ">"}, count=2)
    sync_client.xdel(stream, ids[2])
    assert redis_lag(sync_client, stream) is None

    assert gauges(unstarted_pool(keys), redis_url)["rewardpilot_consumer_group_lag"] == 1


def test_drain_check_sees_stale_lag_drained(sync_client, keys, redis_url):
    read_everything(sync_client, keys.transactions, 5)
    make_lag_stale(sync_client, keys.transactions, 2)

    async def read_backlog():
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await backlog(client, keys.transactions, GROUP)
        finally:
            await client.aclose()

    state = asyncio.run(read_backlog())

    assert state.lag == 0
    assert state.drained


def test_publish_backlog_reads_group_lag(sync_client, keys):
    from producer.publisher import backlog as publish_backlog

    read_everything(sync_client, keys.transactions, 5)
    make_lag_stale(sync_client, keys.transactions, 2)
    reported = redis_lag(sync_client, keys.transactions)
    stale = publish_backlog(sync_client, keys.transactions, GROUP)
    sync_client.xadd(keys.transactions, {"data": "unread"})
    unread = publish_backlog(sync_client, keys.transactions, GROUP)

    assert reported == 3
    assert stale == 0
    assert unread >= 1  # an unread entry counts, by Redis's lag as it is
