"""The consumer pool against a real orchestrator behind a proxy that misbehaves.

Each case publishes transactions, drains them with the real pool (``build_pool``
with an ``http://127.0.0.1`` orchestrator URL). Then it checks the invariant
of the pipeline: every transaction ends with exactly one result or exactly
one dead letter, and nothing stays pending in the consumer group.

The cases whose subject is the HTTP client (Retry-After, timeouts, a body
that is not JSON, a rejected key, the start-up check) run on one server.
The cases that dead-letter, give entries back to the group or share the
rate-limit bucket run on each, because they depend on the server's replies.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from email.utils import format_datetime

import pytest
import redis
import redis.asyncio as aioredis
import structlog.testing

from conftest import free_port, one_server
from consumer.build import CallOptions, build_pool
from consumer.dlq import list_dead_letters
from consumer.ratelimit.redis_bucket import read_bucket_state
from consumer.settings import ConsumerSettings
from fault_proxy import Fault, FaultProxy, first, wait_for
from orchestrator_servers import UvicornThread
from producer import Producer
from rewardpilot.models import Transaction
from rewardpilot.orchestrator import create_app
from rewardpilot.results import read_results

MERCHANTS = [
    ("Whole Foods Market", "5411", "groceries"),
    ("Shell", "5541", "gas"),
    ("Delta Air Lines", "3058", "airfare"),
]


def make_transactions(count: int, prefix: str = "f"):
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    return [
        Transaction(
            transaction_id=f"{prefix}-{index:04d}", user_id=f"user-{index % 3}",
            merchant=MERCHANTS[index % 3][0], mcc=MERCHANTS[index % 3][1], category=MERCHANTS[index % 3][2],
            amount_usd=Decimal(2000 + index) / 100, timestamp=start + timedelta(minutes=index),
        )
        for index in range(count)
    ]


def publish(url: str, keys, items) -> list[str]:
    client = redis.Redis.from_url(url)
    try:
        Producer(client, keys, max_backlog=None).publish_many(items)
    finally:
        client.close()
    return [item.transaction_id for item in items]


def fast_settings(keys, *, workers: int = 2, batch_size: int = 5) -> ConsumerSettings:
    return ConsumerSettings(
        keys=keys, workers=workers, batch_size=batch_size, block_ms=100, drain=True,
        visibility_timeout_ms=1500, claim_interval_seconds=0.1, shutdown_grace_seconds=2.0,
    )


def fast_options(url: str, **overrides) -> CallOptions:
    options = CallOptions(
        orchestrator_url=url, rate="200/s", burst=20, max_attempts=3, base_delay=0.02, max_delay=0.1,
        breaker_threshold=5, breaker_cooldown=0.5, timeout=1.0,
    )
    for name, value in overrides.items():
        setattr(options, name, value)
    return options


async def drain(url: str, settings: ConsumerSettings, options: CallOptions):
    """Run the pool until the group is drained; return the pool (its stats and name)."""
    client = aioredis.Redis.from_url(url)
    pool = build_pool(client, settings, options)
    try:
        await asyncio.wait_for(pool.run(), timeout=90)
    finally:
        await pool.recommender.aclose()
        await client.aclose()
    return pool


def outcomes(client: redis.Redis, keys) -> tuple[list, list]:
    results = list(read_results(client, keys.results()))
    letters = [letter for _, letter in list_dead_letters(client, keys)]
    return results, letters


def assert_each_once(client: redis.Redis, keys, published: list[str]) -> tuple[list, list]:
    """Check that each published transaction has exactly one outcome and nothing is pending."""
    results, letters = outcomes(client, keys)
    seen = Counter([result.transaction_id for result in results] + [letter.transaction_id for letter in letters])

    assert len(results) + len(letters) == len(published)
    assert set(seen) == set(published)
    assert [tx for tx, count in seen.items() if count != 1] == []
    assert client.xpending(keys.transactions, keys.group())["pending"] == 0
    return results, letters


@pytest.fixture(scope="module")
def orchestrator():
    with UvicornThread(create_app()) as running:
        yield running


@one_server
async def test_retry_after_seconds_obeyed(redis_url, keys, sync_client, orchestrator):
    published = publish(redis_url, keys, make_transactions(10))
    retry_after = Fault(429, headers={"Content-Type": "application/json", "Retry-After": "1"})

    with FaultProxy(orchestrator.url, first(2, retry_after)) as proxy:
        pool = await drain(redis_url, fast_settings(keys, workers=1), fast_options(proxy.url))

    results, letters = assert_each_once(sync_client, keys, published)
    assert len(results) == 10
    assert letters == []
    assert proxy.statuses[:2] == [429, 429]
    assert pool.stats.retries == 2
    # Jittered backoff here is at most 0.1 s, so a run this long waited the 1 s twice.
    assert pool.stats.as_dict()["elapsed_seconds"] >= 2.0


@one_server
async def test_retry_after_http_date_obeyed(redis_url, keys, sync_client, orchestrator):
    published = publish(redis_url, keys, make_transactions(10))

    def dated_429() -> Fault:
        when = datetime.now(timezone.utc) + timedelta(seconds=2)
        return Fault(429, headers={"Content-Type": "application/json", "Retry-After": format_datetime(when, usegmt=True)})

    with FaultProxy(orchestrator.url, first(1, dated_429)) as proxy:
        pool = await drain(redis_url, fast_settings(keys, workers=1), fast_options(proxy.url))

    results, letters = assert_each_once(sync_client, keys, published)
    assert len(results) == 10
    assert letters == []
    assert pool.stats.retries == 1
    # The date is 2 s ahead at one-second resolution, so the wait is over 1 s.
    assert pool.stats.as_dict()["elapsed_seconds"] >= 1.0


async def test_http_500_dead_letters(redis_url, keys, sync_client, orchestrator):
    published = publish(redis_url, keys, make_transactions(8))

    with FaultProxy(orchestrator.url, lambda index: Fault(500)) as proxy:
        pool = await drain(redis_url, fast_settings(keys), fast_options(proxy.url))

    results, letters = assert_each_once(sync_client, keys, published)
    assert results == []
    assert len(letters) == 8
    assert pool.stats.dead_letters == 8
    assert pool.stats.retries == 0
    assert {letter.http_status for letter in letters} == {500}
    assert {letter.attempts for letter in letters} == {1}
    assert {letter.consumer for letter in letters} == {pool.name}
    assert {letter.reason for letter in letters} == {"rejected by recommender"}
    assert all(letter.first_failure_at <= letter.last_failure_at for letter in letters)
    assert all(letter.last_failure_at.tzinfo is not None for letter in letters)
    assert all('"transaction_id":"' + letter.transaction_id + '"' in letter.payload["data"] for letter in letters)
    assert proxy.posts == 2  # one batch call per batch of 5, never retried


async def test_dead_letter_counts_earlier_attempts(redis_url, keys, sync_client, orchestrator):
    published = publish(redis_url, keys, make_transactions(5))

    def plan(index: int) -> Fault:
        return Fault(503) if index < 2 else Fault(400)  # two transient failures, then a permanent one

    with FaultProxy(orchestrator.url, plan) as proxy:
        pool = await drain(redis_url, fast_settings(keys), fast_options(proxy.url, breaker_threshold=10))

    results, letters = assert_each_once(sync_client, keys, published)
    assert results == []
    assert len(letters) == 5
    assert pool.stats.retries == 2
    assert {letter.http_status for letter in letters} == {400}
    assert {letter.attempts for letter in letters} == {3}
    assert all(letter.first_failure_at < letter.last_failure_at for letter in letters)


async def test_503_then_ok_all_results(redis_url, keys, sync_client, orchestrator):
    published = publish(redis_url, keys, make_transactions(20))

    with FaultProxy(orchestrator.url, first(4, Fault(503))) as proxy:
        pool = await drain(redis_url, fast_settings(keys), fast_options(proxy.url, breaker_threshold=10))

    results, letters = assert_each_once(sync_client, keys, published)
    assert len(results) == 20
    assert letters == []
    assert proxy.statuses.count(503) == 4
    assert pool.stats.retries >= 2
    assert pool.stats.recommender_calls >= 4 + 4  # 4 batches of 5, and 4 failed tries


async def test_503_past_attempts_given_back(redis_url, keys, sync_client, orchestrator):
    """Attempts run out twice: the batch goes back to the group, never to the dead letters."""
    published = publish(redis_url, keys, make_transactions(5))

    with FaultProxy(orchestrator.url, first(6, Fault(503))) as proxy:
        pool = await drain(redis_url, fast_settings(keys, workers=1),
                           fast_options(proxy.url, max_attempts=3, breaker_threshold=20))

    results, letters = assert_each_once(sync_client, keys, published)
    assert len(results) == 5
    assert letters == []
    assert proxy.statuses.count(503) == 6
    assert pool.stats.claimed >= 5


@one_server
async def test_hang_past_timeout_then_ok(redis_url, keys, sync_client, orchestrator):
    published = publish(redis_url, keys, make_transactions(10))

    with FaultProxy(orchestrator.url, first(2, Fault(hang_seconds=5))) as proxy:
        pool = await drain(redis_url, fast_settings(keys), fast_options(proxy.url, timeout=0.5))

    results, letters = assert_each_once(sync_client, keys, published)
    assert len(results) == 10
    assert letters == []
    assert proxy.posts >= 4
    assert pool.stats.retries >= 1


@one_server
async def test_slow_answer_below_timeout(redis_url, keys, sync_client, orchestrator):
    published = publish(redis_url, keys, make_transactions(10))

    with FaultProxy(orchestrator.url, lambda index: Fault(delay_seconds=0.3)) as proxy:
        pool = await drain(redis_url, fast_settings(keys), fast_options(proxy.url, timeout=2.0))

    results, letters = assert_each_once(sync_client, keys, published)
    assert len(results) == 10
    assert letters == []
    assert pool.stats.retries == 0
    assert proxy.posts == 2


@one_server
async def test_body_not_json_dead_letters(redis_url, keys, sync_client, orchestrator):
    published = publish(redis_url, keys, make_transactions(6))
    not_json = Fault(200, body=b"<html>upstream error</html>", headers={"Content-Type": "text/html"})

    with FaultProxy(orchestrator.url, lambda index: not_json) as proxy:
        pool = await drain(redis_url, fast_settings(keys, batch_size=3), fast_options(proxy.url))

    results, letters = assert_each_once(sync_client, keys, published)
    assert results == []
    assert len(letters) == 6
    assert {letter.error_type for letter in letters} == {"contract_error"}
    assert {letter.http_status for letter in letters} == {200}
    assert all("not a batch answer" in letter.error for letter in letters)
    assert pool.stats.retries == 0


@one_server
async def test_wrong_key_dead_letters(redis_url, keys, sync_client, monkeypatch):
    published = publish(redis_url, keys, make_transactions(6))
    monkeypatch.setenv("ORCHESTRATOR_API_KEY", "wrong-key")

    with UvicornThread(create_app(api_key="right-key")) as guarded:
        pool = await drain(redis_url, fast_settings(keys), fast_options(guarded.url))

    results, letters = assert_each_once(sync_client, keys, published)
    assert results == []
    assert len(letters) == 6
    assert {letter.http_status for letter in letters} == {401}
    assert all("wrong-key" not in letter.error for letter in letters)
    assert pool.stats.retries == 0


async def test_mixed_batch_partial_dead_letters(redis_url, keys, sync_client, orchestrator):
    """One batch call answers 400 and the others succeed: only that batch is dead-lettered."""
    published = publish(redis_url, keys, make_transactions(15))

    def plan(index: int) -> Fault | None:
        return Fault(400) if index == 1 else None

    with FaultProxy(orchestrator.url, plan) as proxy:
        await drain(redis_url, fast_settings(keys, workers=1), fast_options(proxy.url))

    results, letters = assert_each_once(sync_client, keys, published)
    assert len(results) == 10
    assert len(letters) == 5
    assert {letter.http_status for letter in letters} == {400}
    assert sorted(letter.transaction_id for letter in letters) == [f"f-{index:04d}" for index in range(5, 10)]


async def test_429_cuts_then_climbs(redis_url, keys, sync_client, orchestrator):
    """A 429 the bucket allowed cuts the shared rate, and successes raise it again."""
    published = publish(redis_url, keys, make_transactions(60))
    samples: list[float] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        client = redis.Redis.from_url(redis_url)
        try:
            while not stop_sampling.is_set():
                state = read_bucket_state(client, keys.rate_limit())
                if state is not None:
                    samples.append(state.effective_rate)
                stop_sampling.wait(0.01)
        finally:
            client.close()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with FaultProxy(orchestrator.url, first(1, Fault(429))) as proxy:
            pool = await drain(redis_url, fast_settings(keys, workers=1, batch_size=2),
                               fast_options(proxy.url, rate="40/s", burst=2))
    finally:
        stop_sampling.set()
        sampler.join(5)

    results, letters = assert_each_once(sync_client, keys, published)
    assert len(results) == 60
    assert letters == []
    assert proxy.statuses[0] == 429

    state = read_bucket_state(sync_client, keys.rate_limit())
    assert state.configured_rate == 40.0
    lowest = min(samples)
    # The default cut halves the rate: 40/s -> 20/s.
    assert lowest == pytest.approx(20.0)
    assert state.effective_rate > lowest
    assert samples.index(lowest) < len(samples) - 1


@pytest.mark.slow
async def test_outage_ten_seconds_no_dead_letters(one_redis_url, one_keys, orchestrator):
    """The orchestrator's port refuses connections for 10 s mid-run; every entry waits for it."""
    published = publish(one_redis_url, one_keys, make_transactions(120))
    proxy = FaultProxy(orchestrator.url)
    proxy.start()
    outage_over = threading.Event()

    def outage() -> None:
        if wait_for(lambda: proxy.posts >= 8, seconds=20):
            proxy.stop()
            time.sleep(10)
            proxy.start()
        outage_over.set()

    breaker = threading.Thread(target=outage, daemon=True)
    breaker.start()
    try:
        pool = await drain(one_redis_url, fast_settings(one_keys, batch_size=2),
                           fast_options(proxy.url, rate="20/s", burst=2, breaker_threshold=3,
                                        breaker_cooldown=1.0, timeout=0.5))
    finally:
        breaker.join(30)
        proxy.stop()

    assert outage_over.is_set()
    client = redis.Redis.from_url(one_redis_url)
    try:
        results, letters = assert_each_once(client, one_keys, published)
    finally:
        client.close()
    assert len(results) == 120
    assert letters == []
    assert pool.stats.breaker_openings >= 1
    assert pool.stats.dead_letters == 0


@one_server
async def test_unreachable_orchestrator_warned_at_start(redis_url, keys, sync_client):
    """A pool started while nothing listens logs a warning at once, naming the drain wait, and loses nothing."""
    publish(redis_url, keys, make_transactions(3, prefix="down"))
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = aioredis.Redis.from_url(redis_url)
    pool = build_pool(client, fast_settings(keys), fast_options(url))

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(pool.run())
        try:
            for _ in range(1000):  # at most 20 s
                if any("not reachable at start" in event["event"] for event in logs):
                    break
                await asyncio.sleep(0.02)
        finally:
            pool.stop()
            await asyncio.wait_for(task, timeout=30)
            await pool.recommender.aclose()
            await client.aclose()

    warning = next(event for event in logs if "not reachable at start" in event["event"])
    assert "the drain waits for it" in warning["event"]
    assert warning["recommender"] == "http"
    assert "/health" in warning["error"]
    assert sync_client.xlen(keys.results()) == 0
    assert sync_client.xlen(keys.dead_letters) == 0
    # The pool waits for the orchestrator before it reads, so the entries stay unread, not pending.
    assert sync_client.xlen(keys.transactions) == 3
    assert sync_client.xpending(keys.transactions, keys.group())["pending"] == 0


@one_server
async def test_reachable_orchestrator_no_start_warning(redis_url, keys):
    publish(redis_url, keys, make_transactions(2, prefix="up"))
    with UvicornThread(create_app()) as server:
        with structlog.testing.capture_logs() as logs:
            pool = await drain(redis_url, fast_settings(keys), fast_options(server.url))

    assert pool.stats.results == 2
    assert not [event for event in logs if "not reachable at start" in event["event"]]
