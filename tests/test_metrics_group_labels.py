"""Labels and help text of the gauges that every consumer of a group exports with the same value."""

from __future__ import annotations

import redis.asyncio as aioredis

from conftest import one_server
from consumer.metrics import PoolCollector
from consumer.pool import ConsumerPool
from consumer.settings import ConsumerSettings

GROUP_GAUGES = ("group_lag", "group_pending", "group_oldest_pending_seconds")


def families(keys, redis_url: str, consumer: str = "c1") -> dict:
    # The pool is built but never run, so its client never connects.
    pool = ConsumerPool(aioredis.Redis(), ConsumerSettings(keys=keys, consumer=consumer))
    return {family.name.removeprefix("rewardpilot_consumer_"): family
            for family in PoolCollector(pool, redis_url).collect()}


@one_server
def test_group_gauges_have_no_consumer_label(sync_client, keys, redis_url):
    sync_client.xgroup_create(keys.transactions, "rp-consumers", id="0", mkstream=True)
    sync_client.xadd(keys.transactions, {"data": "a"})
    sync_client.xreadgroup("rp-consumers", "c1", {keys.transactions: ">"})
    sync_client.xadd(keys.dead_letters, {"data": "dead"})

    found = families(keys, redis_url)

    for name in GROUP_GAUGES:
        [sample] = found[name].samples
        assert sample.labels == {"stream": keys.transactions, "group": "rp-consumers"}, name
        assert "max by (stream, group), not sum" in found[name].documentation, name
    [dead_letters] = found["dead_letters"].samples
    assert dead_letters.labels == {"stream": keys.dead_letters}
    assert dead_letters.value == 1
    assert "max by (stream), not sum" in found["dead_letters"].documentation
    assert found["group_pending"].samples[0].value == 1


@one_server
def test_group_gauges_same_on_every_consumer(sync_client, keys, redis_url):
    """Two consumers of one group export identical series, which Prometheus distinguishes only by instance."""
    sync_client.xgroup_create(keys.transactions, "rp-consumers", id="0", mkstream=True)
    sync_client.xadd(keys.transactions, {"data": "a"})

    first = families(keys, redis_url, consumer="c1")
    second = families(keys, redis_url, consumer="c2")

    for name in (*GROUP_GAUGES, "dead_letters"):
        assert first[name].samples == second[name].samples, name


@one_server
def test_counters_keep_consumer_label(keys, redis_url):
    found = families(keys, redis_url, consumer="c7")

    [processed] = found["transactions_processed"].samples
    assert processed.labels == {"consumer": "c7", "group": "rp-consumers"}
    [size_count] = [sample for sample in found["batch_size"].samples if sample.name.endswith("_count")]
    assert size_count.labels == {"consumer": "c7", "group": "rp-consumers"}
