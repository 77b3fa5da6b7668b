"""Log lines about many entries list the five oldest entry ids and count them all."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis
import structlog.testing

from consumer.errors import TransientError
from consumer.guarded import GuardedRecommender
from consumer.pool import ConsumerPool
from consumer.recommenders import ItemError
from consumer.recovery import recover_once
from consumer.retry import RetryPolicy
from consumer.settings import ConsumerSettings
from consumer.stats import PoolStats
from rewardpilot.logs import LOGGED_ENTRY_IDS, entry_id_fields, get_logger
from test_pipeline import drain, publish, transactions


def stream_ids(count: int) -> list[str]:
    return [f"1700000000{index:03d}-{index % 3}" for index in range(count)]


# The helper


def test_fields_cap_long_list():
    ids = stream_ids(500)

    fields = entry_id_fields(ids)

    assert fields["entry_ids"] == ids[:LOGGED_ENTRY_IDS]
    assert fields["entries"] == 500


def test_fields_oldest_first():
    """Ids out of order are listed in stream order, compared as numbers rather than text."""
    ids = ["1700000000010-0", "1700000000009-5", "1700000000009-12", "1700000000002-0",
           "1700000000100-0", "1700000000001-7", "1700000000001-3"]

    fields = entry_id_fields(ids)

    assert fields["entry_ids"] == ["1700000000001-3", "1700000000001-7", "1700000000002-0",
                                   "1700000000009-5", "1700000000009-12"]
    assert fields["entries"] == 7


def test_fields_short_list_whole():
    assert entry_id_fields(("5-0", "3-1")) == {"entry_ids": ["3-1", "5-0"], "entries": 2}
    assert entry_id_fields([]) == {"entry_ids": [], "entries": 0}


def test_fields_non_stream_ids_keep_order():
    """Ids that do not parse as stream ids are not sorted, and never make the log call raise."""
    ids = ["b-item", "a-item", "7-0", "c", "d", "e", "f"]

    fields = entry_id_fields(ids)

    assert fields["entry_ids"] == ["b-item", "a-item", "7-0", "c", "d"]
    assert fields["entries"] == 7


# The consumer's log calls


async def test_dead_letter_log_capped(redis_url, keys, sync_client):
    for index in range(40):
        sync_client.xadd(keys.transactions, {"garbage": str(index)})
    oldest = [entry_id for entry_id, _ in sync_client.xrange(keys.transactions, count=LOGGED_ENTRY_IDS)]

    with structlog.testing.capture_logs() as logs:
        stats = await drain(redis_url, ConsumerSettings(keys=keys, workers=1, batch_size=500))

    lines = [event for event in logs if event["event"] == "entries dead-lettered"]
    assert stats.dead_letters == 40
    assert len(lines) == 1
    assert lines[0]["entry_ids"] == oldest
    assert lines[0]["entries"] == 40
    assert lines[0]["transaction_ids"] == [None] * LOGGED_ENTRY_IDS  # the payloads hold no transaction
    assert "count" not in lines[0]


class RejectsAll:
    """A recommender that rejects every transaction permanently."""

    name = "rejecting"

    async def recommend(self, items):
        return [ItemError("Rejected", "not today") for _ in items]

    async def aclose(self) -> None:
        return None


async def test_dead_letter_log_names_transactions(redis_url, keys, sync_client):
    publish(redis_url, keys, transactions(8))
    published = [entry_id for entry_id, _ in sync_client.xrange(keys.transactions)]
    ids_by_entry = {entry_id: json.loads(fields["data"])["transaction_id"]
                    for entry_id, fields in sync_client.xrange(keys.transactions)}
    client = aioredis.Redis.from_url(redis_url)
    pool = ConsumerPool(client, ConsumerSettings(keys=keys, workers=1, batch_size=500, block_ms=100, drain=True),
                        RejectsAll())
    try:
        with structlog.testing.capture_logs() as logs:
            stats = await asyncio.wait_for(pool.run(), timeout=60)
    finally:
        await client.aclose()

    lines = [event for event in logs if event["event"] == "entries dead-lettered"]
    assert stats.dead_letters == 8
    assert lines[0]["entry_ids"] == published[:LOGGED_ENTRY_IDS]
    assert lines[0]["transaction_ids"] == [ids_by_entry[entry_id] for entry_id in published[:LOGGED_ENTRY_IDS]]


class AlwaysDown:
    """A recommender that fails every call with a transient error."""

    name = "down"

    async def recommend(self, items):
        raise TransientError("connection refused", status=None)

    async def aclose(self) -> None:
        return None


async def test_given_back_log_capped():
    ids = stream_ids(300)
    guarded = GuardedRecommender(AlwaysDown(), stats=PoolStats(), log=get_logger("test"),
                                 retry=RetryPolicy(max_attempts=1))

    with structlog.testing.capture_logs() as logs:
        outcome = await guarded.call([], ids)

    lines = [event for event in logs if event["event"] == "recommender failing; batch given back to the group"]
    assert outcome is None
    assert len(lines) == 1
    assert lines[0]["entry_ids"] == ids[:LOGGED_ENTRY_IDS]
    assert lines[0]["entries"] == 300


async def test_reclaim_log_lists_ids(redis_url, keys, sync_client):
    """A recovery pass logs the oldest reclaimed ids, the count and the stream, not just the first id."""
    publish(redis_url, keys, transactions(12))
    sync_client.xgroup_create(keys.transactions, keys.group(), id="0")
    read = sync_client.xreadgroup(keys.group(), "dead-consumer", {keys.transactions: ">"}, count=12)[0][1]
    claimed = [entry_id for entry_id, _ in read]
    # Idle for two minutes, so the pool's recovery pass takes them over.
    sync_client.xclaim(keys.transactions, keys.group(), "dead-consumer", 0, claimed, idle=120_000)

    settings = ConsumerSettings(keys=keys, workers=1, batch_size=20, visibility_timeout_ms=60_000)
    client = aioredis.Redis.from_url(redis_url)
    pool = ConsumerPool(client, settings)
    try:
        await pool.transport.open()
        with structlog.testing.capture_logs() as logs:
            handled = await asyncio.wait_for(recover_once(pool), timeout=60)
    finally:
        await pool.recommender.aclose()
        await client.aclose()

    lines = [event for event in logs if event["event"] == "reclaimed stale entries"]
    assert handled == 12
    assert len(lines) == 1
    assert lines[0]["entry_ids"] == claimed[:LOGGED_ENTRY_IDS]
    assert lines[0]["entries"] == 12
    assert lines[0]["stream"] == keys.transactions
    assert lines[0]["last_entry_id"] == claimed[-1]
    assert "first_entry_id" not in lines[0]
