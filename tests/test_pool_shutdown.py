"""A pool that stops while a batch waits on the rate limiter or an open breaker gives the batch back at once."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import redis
import redis.asyncio as aioredis
import structlog

from consumer.build import CallOptions, build_pool
from consumer.settings import ConsumerSettings
from orchestrator_servers import UvicornThread
from producer import Producer
from rewardpilot.models import Transaction
from rewardpilot.orchestrator import create_app
from fault_proxy import Fault, FaultProxy

VISIBILITY_MS = 30_000


def publish(url: str, keys, count: int) -> None:
    start = datetime(2026, 11, 2, tzinfo=timezone.utc)
    items = [
        Transaction(transaction_id=f"s-{index:03d}", user_id="user-1", merchant="Shell", mcc="5541",
                    category="gas", amount_usd=Decimal(1000 + index) / 100,
                    timestamp=start + timedelta(minutes=index))
        for index in range(count)
    ]
    client = redis.Redis.from_url(url)
    try:
        Producer(client, keys, max_backlog=None).publish_many(items)
    finally:
        client.close()


def settings(keys) -> ConsumerSettings:
    # A grace period far longer than the test's own timeout: only giving the batch back ends the run in time.
    return ConsumerSettings(keys=keys, workers=1, batch_size=5, block_ms=100, drain=False,
                            visibility_timeout_ms=VISIBILITY_MS, shutdown_grace_seconds=120.0)


async def wait_until(predicate, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def stop_and_check_given_back(pool, task, sync, keys, *, settled: int) -> None:
    pool.stop()
    await asyncio.wait_for(task, timeout=20)

    assert sync.xlen(keys.results()) == settled
    pending = sync.xpending_range(keys.transactions, keys.group(), min="-", max="+", count=100)
    assert len(pending) == 5
    for entry in pending:
        # Given back: the delivery is not counted, and recovery anywhere may claim it at once.
        assert entry["times_delivered"] == 0
        assert entry["time_since_delivered"] >= VISIBILITY_MS


async def test_stop_while_waiting_for_tokens(redis_url, keys, sync_client):
    publish(redis_url, keys, 10)
    client = aioredis.Redis.from_url(redis_url)
    # One token now, the next in a minute: the second batch waits for it.
    pool = build_pool(client, settings(keys), CallOptions(rate="1/min", burst=1))
    task = asyncio.create_task(pool.run())
    try:
        limiter = pool.recommender.limiter
        await wait_until(lambda: limiter.stats.waits >= 1)
        with structlog.testing.capture_logs() as logs:
            await stop_and_check_given_back(pool, task, sync_client, keys, settled=5)
        left = [event for event in logs if event["event"].startswith("consumer stopped with entries pending")]
        assert len(left) == 1
        assert left[0]["pending"] == 5
        assert limiter.stats.seconds_waited < 20
        assert 0.0 <= (await limiter.peek()).tokens < 1.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()


@pytest.fixture(scope="module")
def orchestrator():
    with UvicornThread(create_app()) as running:
        yield running


async def test_stop_while_breaker_open(redis_url, keys, sync_client, orchestrator):
    publish(redis_url, keys, 5)
    client = aioredis.Redis.from_url(redis_url)
    with FaultProxy(orchestrator.url, lambda index: Fault(status=503)) as proxy:
        options = CallOptions(orchestrator_url=proxy.url, max_attempts=10, base_delay=0.01, max_delay=0.02,
                              breaker_threshold=2, breaker_cooldown=300.0, timeout=1.0)
        pool = build_pool(client, settings(keys), options)
        task = asyncio.create_task(pool.run())
        try:
            await wait_until(lambda: pool.stats.breaker_openings >= 1)
            await stop_and_check_given_back(pool, task, sync_client, keys, settled=0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await pool.recommender.aclose()
            await client.aclose()
