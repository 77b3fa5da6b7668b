"""Entries skipped as duplicates: the settle script names them, and the consumer logs them.

A transaction_id published again after the producer's deduplication window
(or with deduplication off) reaches the consumer as a new entry, which the
settle script skips because the run's marker for that transaction_id still
exists. The consumer logs such entries with their transaction_ids and the
entry that has the outcome, so the skipped purchase can be found.
"""

from __future__ import annotations

from decimal import Decimal

import redis
import redis.asyncio as aioredis
import structlog.testing

from consumer.pool import ConsumerPool
from consumer.settings import ConsumerSettings
from consumer.settle import Settler
from consumer.transports import Delivery
from producer import Producer
from rewardpilot.codec import decode_result
from rewardpilot.models import DeadLetter, Transaction
from test_pipeline import drain, publish, transactions

PUBLISHED_AGAIN = "entries skipped without a new result"
SETTLED_BEFORE = "entries skipped: already settled"


def purchase(amount: str) -> Transaction:
    return Transaction(transaction_id="t3-a", user_id="u1", merchant="Shell", category="gas",
                       amount_usd=Decimal(amount), mcc="5541", timestamp="2026-06-01T10:00:00Z")


def publish_without_dedup(url: str, keys, items) -> list[str]:
    """Publish with deduplication off, as a publish after the window is; return the entry ids."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        producer = Producer(client, keys, max_backlog=None, dedup_window_seconds=0)
        return [producer.publish(item) for item in items]
    finally:
        client.close()


def events(logs: list[dict], start: str) -> list[dict]:
    return [event for event in logs if event["event"].startswith(start)]


# The settler


async def settle_result_twice(redis_url, keys, sync_client, second_entry_id: str | None, *, checks=None):
    publish(redis_url, keys, transactions(1))
    await drain(redis_url, ConsumerSettings(keys=keys, workers=1))
    first_entry_id, fields = sync_client.xrange(keys.results())[0]
    result = decode_result(fields)
    entry_id = second_entry_id or result.entry_id

    client = aioredis.Redis.from_url(redis_url)
    try:
        settler = Settler(client, keys, run="live", group=keys.group(), marker_ttl_seconds=60)
        counts = await settler.settle([(entry_id, result)], [], checks=checks)
    finally:
        await client.aclose()
    return result, counts


async def test_settler_names_first_entry(redis_url, keys, sync_client):
    result, counts = await settle_result_twice(redis_url, keys, sync_client, "0-1")

    assert counts.duplicates == 1
    assert counts.duplicates_of == {"0-1": result.entry_id}


async def test_settler_same_entry_again(redis_url, keys, sync_client):
    result, counts = await settle_result_twice(redis_url, keys, sync_client, None)

    assert counts.duplicates_of == {result.entry_id: result.entry_id}


async def test_settler_cap_path_names_first_entry(redis_url, keys, sync_client):
    """A result with cap checks takes the script's other branch, which names the first entry too."""
    result, counts = await settle_result_twice(redis_url, keys, sync_client, "0-2",
                                               checks={"0-2": {"amex-gold:dining": 0}})

    assert counts.written == 0
    assert counts.duplicates_of == {"0-2": result.entry_id}


async def test_settler_dead_letter_names_first_entry(redis_url, keys, sync_client):
    result, _ = await settle_result_twice(redis_url, keys, sync_client, None)
    letter = DeadLetter(entry_id="0-3", stream=keys.transactions, payload={"user_id": result.user_id},
                        reason="rejected", error_type="ValueError", error="test", transaction_id=result.transaction_id,
                        first_failure_at=result.completed_at, last_failure_at=result.completed_at)

    client = aioredis.Redis.from_url(redis_url)
    try:
        settler = Settler(client, keys, run="live", group=keys.group(), marker_ttl_seconds=60)
        counts = await settler.settle([], [letter])
    finally:
        await client.aclose()

    assert counts.dead_letters == 0
    assert counts.duplicates_of == {"0-3": result.entry_id}
    assert sync_client.xlen(keys.dead_letters) == 0


async def test_settler_no_duplicates_empty(redis_url, keys, sync_client):
    publish(redis_url, keys, transactions(1))
    await drain(redis_url, ConsumerSettings(keys=keys, workers=1))
    result = decode_result(sync_client.xrange(keys.results())[0][1])
    sync_client.delete(keys.result_marker("live", result.transaction_id))

    client = aioredis.Redis.from_url(redis_url)
    try:
        settler = Settler(client, keys, run="live", group=keys.group(), marker_ttl_seconds=60)
        counts = await settler.settle([("0-4", result)], [])
    finally:
        await client.aclose()

    assert counts.written == 1
    assert counts.duplicates == 0
    assert counts.duplicates_of == {}


# The consumer's log


async def test_published_again_logged(redis_url, keys, sync_client):
    """The second entry of t3-a gets no result, and the log names it, its transaction_id and the first entry."""
    first, second = publish_without_dedup(redis_url, keys, [purchase("40.00"), purchase("41.00")])

    with structlog.testing.capture_logs() as logs:
        stats = await drain(redis_url, ConsumerSettings(keys=keys, workers=1))

    lines = events(logs, PUBLISHED_AGAIN)
    assert stats.results == 1
    assert stats.duplicates == 1
    assert len(lines) == 1
    assert lines[0]["log_level"] == "warning"
    assert lines[0]["entry_ids"] == [second]
    assert lines[0]["transaction_ids"] == ["t3-a"]
    assert lines[0]["first_entry_ids"] == [first]
    assert lines[0]["marker_ttl_seconds"] == 30 * 24 * 3600
    assert sync_client.get(keys.result_marker("live", "t3-a")) == first


async def test_published_again_later_logged(redis_url, keys, sync_client):
    """A transaction_id published again after its first result was written is logged by the next consumer."""
    (first,) = publish_without_dedup(redis_url, keys, [purchase("40.00")])
    await drain(redis_url, ConsumerSettings(keys=keys, workers=1))
    (second,) = publish_without_dedup(redis_url, keys, [purchase("41.00")])

    with structlog.testing.capture_logs() as logs:
        await drain(redis_url, ConsumerSettings(keys=keys, workers=1))

    lines = events(logs, PUBLISHED_AGAIN)
    results = sync_client.xrange(keys.results())
    assert len(results) == 1
    assert decode_result(results[0][1]).amount_usd == Decimal("40.00")
    assert len(lines) == 1
    assert lines[0]["entry_ids"] == [second]
    assert lines[0]["first_entry_ids"] == [first]


async def test_settled_before_logged_info(redis_url, keys, sync_client):
    """The same entries settled twice, as after a lost reply, are logged at info, not as published again."""
    publish(redis_url, keys, transactions(4))
    sync_client.xgroup_create(keys.transactions, keys.group(), id="0")
    entries = sync_client.xreadgroup(keys.group(), "c1", {keys.transactions: ">"}, count=4)[0][1]
    deliveries = [Delivery(entry_id, fields) for entry_id, fields in entries]

    client = aioredis.Redis.from_url(redis_url)
    pool = ConsumerPool(client, ConsumerSettings(keys=keys))
    try:
        await pool.handle(deliveries)
        with structlog.testing.capture_logs() as logs:
            await pool.handle(deliveries)
    finally:
        await client.aclose()

    lines = events(logs, SETTLED_BEFORE)
    assert events(logs, PUBLISHED_AGAIN) == []
    assert len(lines) == 1
    assert lines[0]["log_level"] == "info"
    assert lines[0]["entry_ids"] == [entry_id for entry_id, _ in entries]
    assert lines[0]["transaction_ids"] == [f"t-{index:06d}" for index in range(4)]


async def test_no_duplicates_no_log(redis_url, keys):
    publish(redis_url, keys, transactions(5))

    with structlog.testing.capture_logs() as logs:
        stats = await drain(redis_url, ConsumerSettings(keys=keys, workers=1))

    assert stats.results == 5
    assert events(logs, PUBLISHED_AGAIN) == []
    assert events(logs, SETTLED_BEFORE) == []


async def test_dead_letter_again_not_logged(redis_url, keys, sync_client):
    """An entry dead-lettered again in the same run is logged once as dead-lettered, with its payload's id."""
    sync_client.xadd(keys.transactions, {"data": '{"transaction_id": "bad-neg", "user_id": "u1", '
                                                 '"merchant": "Shell", "amount_usd": "-5.00", "mcc": "5541"}'})

    with structlog.testing.capture_logs() as first_logs:
        await drain(redis_url, ConsumerSettings(keys=keys, workers=1))
    sync_client.xgroup_destroy(keys.transactions, keys.group())
    with structlog.testing.capture_logs() as second_logs:
        await drain(redis_url, ConsumerSettings(keys=keys, workers=1))

    first = events(first_logs, "entries dead-lettered")
    assert len(first) == 1
    assert first[0]["transaction_ids"] == ["bad-neg"]
    assert events(second_logs, "entries dead-lettered") == []
    assert sync_client.xlen(keys.dead_letters) == 1
