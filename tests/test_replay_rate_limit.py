"""A replay's rate limit caps the replay alone and never changes the rate the live consumers share.

The live consumers' orchestrator bucket is set up the way a live consumer
sets it up: a ``RedisTokenBucket`` owner that takes a token.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as aioredis

from conftest import one_server, run_cli
from consumer.build import CallOptions, build_pool, replay_bucket_key
from consumer.ratelimit import RateLimitConfig, RedisTokenBucket, read_bucket_state
from consumer.settings import ConsumerSettings
from orchestrator_servers import UvicornThread
from rewardpilot.orchestrator import create_app
from rewardpilot.replay import replay_async, reset_group
from test_replay import add_transactions

ONE_PER_HOUR = 1 / 3600  # so slow that no token accrues while a test runs


@pytest.fixture(scope="module")
def orchestrator():
    with UvicornThread(create_app()) as running:
        yield running


@pytest.fixture(autouse=True)
def no_api_key(monkeypatch):
    monkeypatch.delenv("ORCHESTRATOR_API_KEY", raising=False)


async def set_up_live_bucket(url: str, keys, *, rate: float, burst: int, counting: str = "requests",
                             tokens: int = 1) -> None:
    """Take ``tokens`` tokens as live consumer ``m8`` does, which writes its rate, burst and counting mode."""
    client = aioredis.Redis.from_url(url)
    try:
        live = RedisTokenBucket(client, RateLimitConfig(rate=rate, burst=burst, counting=counting), keys=keys)
        live.bind_log(consumer="m8", group="rp-consumers", run="live")
        for _ in range(tokens):
            await live.acquire()
    finally:
        await client.aclose()


def replay_settings(keys, run: str, **changes) -> ConsumerSettings:
    fields = dict(keys=keys, run=run, workers=1, batch_size=1, block_ms=100, drain=True,
                  shutdown_grace_seconds=5.0, result_ttl_seconds=0)
    fields.update(changes)
    return ConsumerSettings(**fields)


async def wait_until(predicate, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def run_until_waiting(client, settings: ConsumerSettings, options: CallOptions):
    """Run a replay pool until its limiter makes a batch wait, then stop it; return the pool."""
    pool = build_pool(client, settings, options, replay=True)
    await reset_group(client, settings.keys.transactions, settings.group_name, "0-0")
    task = asyncio.create_task(pool.run())
    try:
        await wait_until(lambda: pool.recommender.limiter.stats.waits >= 1)
        pool.stop()
        await asyncio.wait_for(task, timeout=20)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.recommender.aclose()
    return pool


@one_server
def test_replay_rate_leaves_live_rate(redis_url, keys, sync_client, cli_env):
    """`replay --rate 1/s` with the in-process engine neither rewrites nor touches the live bucket."""
    add_transactions(sync_client, keys, 3)
    asyncio.run(set_up_live_bucket(redis_url, keys, rate=20.0, burst=5))
    before = sync_client.hgetall(keys.rate_limit())

    env = {**cli_env, "RP_LOG_LEVEL": "INFO"}
    completed = run_cli(["--prefix", keys.prefix, "replay", "--start", "0", "--run", "rl-test",
                         "--rate", "1/s", "--json"], env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert json.loads(completed.stdout)["results"] == 3
    assert sync_client.hgetall(keys.rate_limit()) == before
    live = read_bucket_state(sync_client, keys.rate_limit())
    assert live.configured_rate == 20.0
    assert live.burst == 5.0
    own = read_bucket_state(sync_client, replay_bucket_key(keys, "rl-test"))
    assert own is not None
    assert own.configured_rate == 1.0
    assert "replacing the shared rate limit" not in completed.stderr


async def test_replay_rate_caps_replay(redis_url, keys, sync_client):
    """An in-process replay at 1/min settles one batch, then waits in its own bucket, and no shared one is created."""
    add_transactions(sync_client, keys, 3)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await run_until_waiting(client, replay_settings(keys, "capped"), CallOptions(rate="1/min", burst=1))
    finally:
        await client.aclose()

    assert sync_client.xlen(keys.results("capped")) == 1
    assert read_bucket_state(sync_client, replay_bucket_key(keys, "capped")).configured_rate == 1 / 60
    assert not sync_client.exists(keys.rate_limit())
    assert not sync_client.exists(keys.rate_limit("in-process"))


async def test_orchestrator_replay_waits_on_live_bucket(redis_url, keys, sync_client, orchestrator):
    """With the live bucket empty, a replay calling the orchestrator waits for it, whatever its own --rate."""
    add_transactions(sync_client, keys, 3)
    await set_up_live_bucket(redis_url, keys, rate=ONE_PER_HOUR, burst=2, tokens=2)
    client = aioredis.Redis.from_url(redis_url)
    try:
        options = CallOptions(orchestrator_url=orchestrator.url, rate="100/s", burst=10)
        await run_until_waiting(client, replay_settings(keys, "guest"), options)
    finally:
        await client.aclose()

    assert sync_client.xlen(keys.results("guest")) == 0
    live = read_bucket_state(sync_client, keys.rate_limit())
    assert live.configured_rate == ONE_PER_HOUR
    assert live.burst == 2.0
    assert sync_client.hget(keys.rate_limit(), "set_by") == "m8"


@pytest.mark.parametrize(("counting", "tokens_left"), [("requests", 7), ("transactions", 5)])
async def test_orchestrator_replay_counts_in_live_bucket(redis_url, keys, sync_client, orchestrator,
                                                         counting, tokens_left):
    """Each replay call takes tokens from the live bucket by the live counting mode: 2 calls of 2 transactions."""
    add_transactions(sync_client, keys, 4)
    await set_up_live_bucket(redis_url, keys, rate=ONE_PER_HOUR, burst=10, counting=counting)
    client = aioredis.Redis.from_url(redis_url)
    try:
        summary = await replay_async(client, keys, start="0", run="counted", batch_size=2,
                                     options=CallOptions(orchestrator_url=orchestrator.url, rate="1000/s"))
    finally:
        await client.aclose()

    assert summary.results == 4
    live = read_bucket_state(sync_client, keys.rate_limit())
    assert live.tokens == pytest.approx(tokens_left, abs=0.05)
    assert live.configured_rate == ONE_PER_HOUR
    assert live.burst == 10.0
    assert sync_client.hget(keys.rate_limit(), "counting") == counting


async def test_guest_batch_above_burst_leaves_debt(redis_url, keys, sync_client, orchestrator):
    """A replay batch of 4 transactions against a burst of 3 takes the full bucket and owes the rest."""
    add_transactions(sync_client, keys, 4)
    client = aioredis.Redis.from_url(redis_url)
    try:
        live = RedisTokenBucket(client, RateLimitConfig(rate=ONE_PER_HOUR, burst=3, counting="transactions"),
                                keys=keys)
        await live.acquire()
        await live.release(1)  # the bucket exists and is full
        summary = await replay_async(client, keys, start="0", run="debt", batch_size=4,
                                     options=CallOptions(orchestrator_url=orchestrator.url))
    finally:
        await client.aclose()

    assert summary.results == 4
    assert read_bucket_state(sync_client, keys.rate_limit()).tokens == pytest.approx(-1, abs=0.05)


async def test_orchestrator_replay_without_live_bucket(redis_url, keys, sync_client, orchestrator):
    """Without a live bucket, a replay calling the orchestrator with no --rate runs unlimited and creates none."""
    add_transactions(sync_client, keys, 3)
    client = aioredis.Redis.from_url(redis_url)
    try:
        summary = await replay_async(client, keys, start="0", run="alone",
                                     options=CallOptions(orchestrator_url=orchestrator.url))
    finally:
        await client.aclose()

    assert summary.results == 3
    assert not sync_client.exists(keys.rate_limit())


async def test_in_process_consumer_skips_orchestrator_bucket(redis_url, keys, sync_client):
    """A live consumer without an orchestrator limits its batches in a bucket of its own."""
    add_transactions(sync_client, keys, 2)
    await set_up_live_bucket(redis_url, keys, rate=20.0, burst=5)
    client = aioredis.Redis.from_url(redis_url)
    try:
        settings = ConsumerSettings(keys=keys, workers=1, block_ms=100, drain=True)
        pool = build_pool(client, settings, CallOptions(rate="1/s", burst=3))
        await asyncio.wait_for(pool.run(), timeout=60)
    finally:
        await client.aclose()

    assert sync_client.xlen(keys.results()) == 2
    assert read_bucket_state(sync_client, keys.rate_limit()).configured_rate == 20.0
    in_process = read_bucket_state(sync_client, keys.rate_limit("in-process"))
    assert in_process.configured_rate == 1.0
    assert in_process.burst == 3.0
