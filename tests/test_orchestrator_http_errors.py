"""HTTP statuses that are not the transaction's fault: 404 and 405 (a wrong URL path) and 413 (a batch too large).

A 404 or 405 keeps the entries pending (retries, breaker, given back) and
logs an error naming the URL. A 413 splits a batch in halves down to one
transaction, and only a lone transaction that is still too large is
dead-lettered. Every server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import redis
import redis.asyncio as aioredis
import structlog.testing

from consumer.build import CallOptions, build_pool
from consumer.dlq import list_dead_letters
from consumer.errors import ConfigurationError, TransientError
from consumer.recommenders.base import ItemError, WorkItem
from consumer.recommenders.http import HttpRecommender, request_body
from consumer.recommenders.mcp import McpRecommender
from consumer.settings import ConsumerSettings
from fault_proxy import FaultProxy
from orchestrator_servers import Scripted, ScriptedServer, UvicornThread
from producer import Producer
from rewardpilot.models import Recommendation, Transaction
from rewardpilot.orchestrator import create_app

BATCH_HEALTH = Scripted(200, b'{"endpoints": ["/health", "/recommend/batch"]}')
PER_ITEM_HEALTH = Scripted(200, b'{"endpoints": ["/health", "/recommend"]}')


def purchases(count: int, prefix: str = "e") -> list[Transaction]:
    start = datetime(2026, 11, 4, 12, 0, tzinfo=timezone.utc)
    return [
        Transaction(transaction_id=f"{prefix}-{index:03d}", user_id=f"u{index % 2}", merchant="Whole Foods Market",
                    category="groceries", amount_usd=Decimal("30.00") + index, mcc="5411",
                    timestamp=start + timedelta(minutes=index))
        for index in range(count)
    ]


def items(count: int) -> list[WorkItem]:
    return [WorkItem(transaction, ("amex-gold", "citi-double-cash"), "run") for transaction in purchases(count)]


def batch_bytes(count: int) -> int:
    """Return the size of the body HttpRecommender sends for a batch of ``count`` items."""
    return len(json.dumps({"transactions": [request_body(item) for item in items(count)]}).encode())


def publish(redis_url: str, keys, count: int) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        Producer(client, keys, max_backlog=None).publish_many(purchases(count))
    finally:
        client.close()


def settings(keys, batch_size: int = 5) -> ConsumerSettings:
    return ConsumerSettings(
        keys=keys, workers=1, batch_size=batch_size, block_ms=100, drain=True,
        visibility_timeout_ms=1500, claim_interval_seconds=0.1, shutdown_grace_seconds=2.0,
    )


def options(url: str) -> CallOptions:
    return CallOptions(orchestrator_url=url, max_attempts=2, base_delay=0.02, max_delay=0.05,
                       breaker_threshold=3, breaker_cooldown=0.3, timeout=2.0, startup_wait=2.0)


async def call(url: str, work: list[WorkItem]):
    recommender = HttpRecommender(url)
    try:
        return await recommender.recommend(work), recommender
    finally:
        await recommender.aclose()


# 404 and 405


@pytest.mark.parametrize("status", [404, 405])
async def test_health_wrong_path_is_configuration_error(status):
    with ScriptedServer({"/api/health": Scripted(status, b'{"detail": "Not Found"}')}) as scripted:
        with pytest.raises(ConfigurationError) as failure:
            await call(f"{scripted.url}/api", items(2))

    message = str(failure.value)
    assert isinstance(failure.value, TransientError)
    assert failure.value.status == status
    assert f"GET {scripted.url}/api/health returned HTTP {status}" in message
    assert "check the path of --orchestrator or ORCHESTRATOR_URL" in message


@pytest.mark.parametrize("status", [404, 405])
async def test_batch_wrong_path_is_configuration_error(status):
    answers = {"/health": BATCH_HEALTH, "/recommend/batch": Scripted(status, b"{}")}
    with ScriptedServer(answers) as scripted:
        with pytest.raises(ConfigurationError) as failure:
            await call(scripted.url, items(2))

    assert failure.value.status == status
    assert f"POST {scripted.url}/recommend/batch returned HTTP {status}" in str(failure.value)


async def test_per_item_wrong_path_is_configuration_error():
    with ScriptedServer({"/health": PER_ITEM_HEALTH}) as scripted:  # /recommend returns 404
        with pytest.raises(ConfigurationError) as failure:
            await call(scripted.url, items(3))

    assert failure.value.status == 404
    assert "/recommend returned HTTP 404" in str(failure.value)


async def test_mcp_wrong_path_is_configuration_error():
    with UvicornThread(create_app()) as server:
        recommender = McpRecommender(f"{server.url}/api/mcp", timeout=5.0)
        try:
            with pytest.raises(ConfigurationError) as failure:
                await recommender.connect()
        finally:
            await recommender.aclose()

    assert failure.value.status == 404
    assert f"{server.url}/api/mcp returned HTTP 404" in str(failure.value)
    assert "such as http://127.0.0.1:8080/mcp" in str(failure.value)


async def test_wrong_url_path_holds_entries(redis_url, keys, sync_client):
    """--orchestrator http://host:port/api: errors name the URL, and no entry is dead-lettered."""
    publish(redis_url, keys, 10)
    with UvicornThread(create_app()) as server:
        url = f"{server.url}/api"
        client = aioredis.Redis.from_url(redis_url)
        pool = build_pool(client, settings(keys), options(url))
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(pool.run())
            try:
                for _ in range(1000):  # at most 20 s
                    if pool.stats.breaker_openings >= 1 and any(
                            "recommender misconfigured;" in event["event"] for event in logs):
                        break
                    await asyncio.sleep(0.02)
                pool.stop()
                await asyncio.wait_for(task, timeout=15)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await pool.recommender.aclose()
                await client.aclose()

    at_start = next(event for event in logs if "misconfigured at start" in event["event"])
    batch_error = next(event for event in logs if "recommender misconfigured;" in event["event"])
    assert at_start["log_level"] == "error"
    assert at_start["url"] == f"{url}/health"
    assert f"{url}/health returned HTTP 404" in at_start["error"]
    assert batch_error["log_level"] == "error"
    assert "check the path" in batch_error["error"]
    assert batch_error["status"] == 404
    assert not any(event["event"] == "orchestrator discovered" for event in logs)
    assert pool.stats.dead_letters == 0
    assert sync_client.xlen(keys.dead_letters) == 0
    assert sync_client.xlen(keys.results()) == 0
    assert sync_client.xpending(keys.transactions, keys.group())["pending"] == 10


# 413


@pytest.fixture(scope="module")
def small_body_orchestrator():
    """An orchestrator that takes a batch of two transactions but not of three."""
    limit = (batch_bytes(2) + batch_bytes(3)) // 2
    with UvicornThread(create_app(max_body_bytes=limit)) as running:
        yield running


async def test_413_splits_batch_to_fit(small_body_orchestrator):
    with FaultProxy(small_body_orchestrator.url) as proxy:
        outcomes, recommender = await call(proxy.url, items(8))

    assert [outcome.transaction_id for outcome in outcomes] == [f"e-{index:03d}" for index in range(8)]
    assert all(isinstance(outcome, Recommendation) for outcome in outcomes)
    # 8 is too large, then each 4 is; the halves of 2 fit: 3 rejections and 4 successes.
    assert proxy.statuses.count(413) == 3
    assert proxy.statuses.count(200) == 4
    assert recommender.max_batch_items == 2


async def test_413_lowers_later_batches(small_body_orchestrator):
    recommender = HttpRecommender(small_body_orchestrator.url)
    with FaultProxy(small_body_orchestrator.url) as proxy:
        recommender.base_url = proxy.url
        try:
            with structlog.testing.capture_logs() as logs:
                await recommender.recommend(items(4))
                first_statuses = list(proxy.statuses)
                await recommender.recommend(items(4))
        finally:
            await recommender.aclose()

    assert first_statuses == [413, 200, 200]
    assert proxy.statuses[len(first_statuses):] == [200, 200]
    (warning,) = [event for event in logs if "HTTP 413" in event["event"]]
    assert warning["log_level"] == "warning"
    assert "raise the orchestrator's request body limit" in warning["event"]
    assert warning["max_batch_items"] == 2
    assert warning["transactions"] == 4


async def test_413_single_transaction_is_item_error():
    with UvicornThread(create_app(max_body_bytes=100)) as server:  # one transaction takes over 200 bytes
        outcomes, _ = await call(server.url, items(2))

    assert len(outcomes) == 2
    for outcome in outcomes:
        assert isinstance(outcome, ItemError)
        assert outcome.http_status == 413
        assert outcome.error_type == "payload_too_large"
        assert "this one transaction as too large" in outcome.message
        assert "raise the orchestrator's request body limit (--max-body-bytes for `rewardpilot orchestrator`)" in outcome.message


async def test_413_per_item_is_item_error():
    answers = {"/health": PER_ITEM_HEALTH, "/recommend": Scripted(413, b'{"detail": "too large"}')}
    with ScriptedServer(answers) as scripted:
        outcomes, _ = await call(scripted.url, items(2))

    assert [outcome.http_status for outcome in outcomes] == [413, 413]
    assert all("cannot be split further" in outcome.message for outcome in outcomes)


async def test_413_pool_settles_everything(redis_url, keys, sync_client, small_body_orchestrator):
    publish(redis_url, keys, 15)
    client = aioredis.Redis.from_url(redis_url)
    pool = build_pool(client, settings(keys, batch_size=8), options(small_body_orchestrator.url))
    try:
        await asyncio.wait_for(pool.run(), timeout=60)
    finally:
        await pool.recommender.aclose()
        await client.aclose()

    assert pool.stats.results == 15
    assert sync_client.xlen(keys.dead_letters) == 0
    assert sync_client.xpending(keys.transactions, keys.group())["pending"] == 0


async def test_413_lone_transaction_dead_lettered(redis_url, keys, sync_client):
    publish(redis_url, keys, 2)
    with UvicornThread(create_app(max_body_bytes=100)) as server:  # one transaction takes over 200 bytes
        client = aioredis.Redis.from_url(redis_url)
        pool = build_pool(client, settings(keys), options(server.url))
        try:
            await asyncio.wait_for(pool.run(), timeout=60)
        finally:
            await pool.recommender.aclose()
            await client.aclose()

    letters = [letter for _, letter in list_dead_letters(sync_client, keys)]
    assert len(letters) == 2
    assert {letter.http_status for letter in letters} == {413}
    assert all("cannot be split further" in letter.error for letter in letters)
    assert {letter.reason for letter in letters} == {"too large for the orchestrator"}
    assert sync_client.xpending(keys.transactions, keys.group())["pending"] == 0
