"""The shared token bucket, against real Redis servers (embedded Valkey and REDIS_URL)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from consumer.errors import InvalidRateLimitError
from consumer.ratelimit import AcquireStopped, RateLimitConfig, RedisTokenBucket, parse_rate, read_bucket_state


@pytest.fixture
async def clients(redis_url):
    """Two independent asyncio clients, as two consumer processes would have."""
    first = aioredis.Redis.from_url(redis_url)
    second = aioredis.Redis.from_url(redis_url)
    yield first, second
    await first.aclose()
    await second.aclose()


def bucket(client, keys, **settings) -> RedisTokenBucket:
    settings.setdefault("rate", 10.0)
    settings.setdefault("burst", 3)
    return RedisTokenBucket(client, RateLimitConfig(**settings), keys=keys)


async def drain(limiter: RedisTokenBucket, tokens: int) -> None:
    for _ in range(tokens):
        reply = await limiter.try_acquire()
        assert reply.granted


async def first_wait(limiter: RedisTokenBucket) -> None:
    """Return once a caller was denied and is waiting (up to about 2 s); check it is the only one."""
    for _ in range(200):
        if limiter.stats.waits:
            break
        await asyncio.sleep(0.01)
    assert limiter.stats.waits == 1


# parse_rate and the config


@pytest.mark.parametrize(
    ("text", "per_second"),
    [
        ("100/min", 100 / 60),
        ("5/s", 5.0),
        ("1.5/sec", 1.5),
        ("2/second", 2.0),
        (" 120 / minute ", 2.0),
        ("30/m", 0.5),
        ("3600/h", 1.0),
        ("7/HOUR", 7 / 3600),
    ],
)
def test_parse_rate_accepts_units(text, per_second):
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["100", "100/day", "abc/s", "-5/s", "100/min/s", "", "/s", "1e3/s"])
def test_parse_rate_rejects_malformed(text):
    with pytest.raises(InvalidRateLimitError) as caught:
        parse_rate(text)
    message = str(caught.value)
    assert repr(text) in message
    assert "100/min" in message


def test_parse_rate_rejects_zero():
    with pytest.raises(InvalidRateLimitError, match="greater than zero"):
        parse_rate("0/s")


def test_parse_rate_rejects_non_string():
    with pytest.raises(InvalidRateLimitError, match="None"):
        parse_rate(None)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"rate": 0, "burst": 1}, "rate"),
        ({"rate": float("nan"), "burst": 1}, "rate"),
        ({"rate": 10, "burst": 0}, "burst"),
        ({"rate": 10, "burst": 2.5}, "burst"),
        ({"rate": 10, "burst": 1, "counting": "bytes"}, "counting"),
        ({"rate": 10, "burst": 1, "decrease_factor": 1.0}, "decrease_factor"),
        ({"rate": 10, "burst": 1, "min_rate": 20}, "min_rate"),
    ],
)
def test_config_rejects_invalid_settings(settings, named):
    with pytest.raises(InvalidRateLimitError, match=named):
        RateLimitConfig(**settings)


def test_config_from_options():
    config = RateLimitConfig.from_options("100/min", "10", "transactions")
    assert config.rate == pytest.approx(100 / 60)
    assert config.burst == 10
    assert config.counting == "transactions"


def test_config_from_options_bad_burst():
    with pytest.raises(InvalidRateLimitError, match="'ten'"):
        RateLimitConfig.from_options("10/s", "ten")


def test_config_cost_by_counting_mode():
    by_request = RateLimitConfig(rate=10, burst=20, counting="requests")
    by_transaction = RateLimitConfig(rate=10, burst=20, counting="transactions")
    assert by_request.cost_for(8) == 1
    assert by_transaction.cost_for(8) == 8
    with pytest.raises(ValueError, match="batch_size"):
        by_transaction.cost_for(0)


def test_config_default_adaptive_settings():
    config = RateLimitConfig(rate=40, burst=5)
    assert config.floor_rate == 2.0
    assert config.recovery_rate == 2.0


# The bucket in Redis


async def test_burst_granted_then_denied(clients, keys):
    limiter = bucket(clients[0], keys, rate=0.5, burst=3)
    await drain(limiter, 3)

    denied = await limiter.try_acquire()
    assert not denied.granted
    # An empty bucket at 0.5 tokens/s needs up to 2 s for one token; less
    # only by what refilled since the drain.
    assert 1.0 < denied.wait_seconds <= 2.0
    assert denied.tokens >= 0


async def test_acquire_waits_for_refill(clients, keys):
    limiter = bucket(clients[0], keys, rate=20.0, burst=1)
    assert await limiter.acquire() == 0.0

    waited = await limiter.acquire()
    assert waited > 0
    assert limiter.stats.waits >= 1
    assert limiter.stats.acquires == 2
    assert limiter.stats.seconds_waited == waited


async def test_two_clients_share_bucket(clients, keys):
    first = bucket(clients[0], keys, rate=0.5, burst=3)
    second = bucket(clients[1], keys, rate=0.5, burst=3)

    await drain(first, 2)
    await drain(second, 1)

    assert not (await second.try_acquire()).granted
    assert not (await first.try_acquire()).granted


async def test_cost_above_burst_rejected(clients, keys):
    limiter = bucket(clients[0], keys, burst=4, counting="transactions")
    with pytest.raises(ValueError, match="exceeds the burst of 4"):
        await limiter.acquire_for_batch(5)
    with pytest.raises(ValueError, match="at least 1"):
        await limiter.acquire(0)


async def test_transactions_mode_spends_batch_size(clients, keys):
    limiter = bucket(clients[0], keys, rate=0.5, burst=10, counting="transactions")
    await limiter.acquire_for_batch(7)

    state = await limiter.peek()
    assert 3.0 <= state.tokens < 3.5


async def test_penalize_cuts_rate_for_other_client(clients, keys):
    first = bucket(clients[0], keys, rate=10.0, burst=3)
    second = bucket(clients[1], keys, rate=10.0, burst=3)
    await drain(second, 1)

    assert await first.penalize()
    assert first.effective_rate() == 5.0

    await second.peek()
    assert second.effective_rate() == 5.0


async def test_penalize_once_per_interval(clients, keys):
    first = bucket(clients[0], keys, rate=10.0, burst=3, cut_interval_seconds=60)
    second = bucket(clients[1], keys, rate=10.0, burst=3, cut_interval_seconds=60)

    assert await first.penalize()
    assert not await second.penalize()
    assert not await first.penalize()
    assert (await second.peek()).effective_rate == 5.0
    assert first.stats.penalties == 2
    assert first.stats.cuts == 1


async def test_penalize_stops_at_floor(clients, keys):
    limiter = bucket(clients[0], keys, rate=10.0, burst=3, min_rate=3.0, cut_interval_seconds=0)

    assert await limiter.penalize()
    assert limiter.effective_rate() == 5.0
    assert await limiter.penalize()
    assert limiter.effective_rate() == 3.0
    assert not await limiter.penalize()
    assert limiter.effective_rate() == 3.0


async def test_cut_rate_slows_refill(clients, keys):
    limiter = bucket(clients[0], keys, rate=2.0, burst=1, cut_interval_seconds=0)
    await drain(limiter, 1)
    await limiter.penalize()
    await limiter.penalize()

    # 2 -> 1 -> 0.5 tokens/s, so one token now takes up to 2 s instead of 0.5 s.
    denied = await limiter.try_acquire()
    assert not denied.granted
    assert 1.0 < denied.wait_seconds <= 2.0


async def test_reward_climbs_to_configured_rate(clients, keys):
    limiter = bucket(clients[0], keys, rate=10.0, burst=3, recovery_per_second=100.0, cut_interval_seconds=0)
    await limiter.penalize()
    assert limiter.effective_rate() == 5.0

    await asyncio.sleep(0.01)
    await limiter.reward()
    assert 5.0 < limiter.effective_rate() <= 10.0

    # 0.2 s of credit at 100 tokens/s per second would add 20; the rate stops at 10.
    await asyncio.sleep(0.2)
    await limiter.reward()
    assert limiter.effective_rate() == 10.0
    assert (await limiter.peek()).effective_rate == 10.0

    rewards = limiter.stats.rewards
    await limiter.reward()
    assert limiter.stats.rewards == rewards


async def test_reward_credits_at_most_one_second(clients, keys):
    limiter = bucket(clients[0], keys, rate=10.0, burst=3, recovery_per_second=2.0, cut_interval_seconds=0)
    await limiter.penalize()

    # 1.1 s idle would be worth 2.2 tokens/s, but one reward credits 1 s: 5 + 2 = 7.
    await asyncio.sleep(1.1)
    await limiter.reward()
    assert limiter.effective_rate() == pytest.approx(7.0)


async def test_lower_configured_rate_applies(clients, keys):
    first = bucket(clients[0], keys, rate=10.0, burst=3)
    second = bucket(clients[1], keys, rate=4.0, burst=3)
    await drain(first, 1)

    assert (await second.peek()).effective_rate == 4.0


async def test_release_capped_at_burst(clients, keys):
    limiter = bucket(clients[0], keys, rate=0.5, burst=3)
    await drain(limiter, 3)

    await limiter.release(2)
    assert 2.0 <= (await limiter.peek()).tokens < 2.5

    await limiter.release(2)
    assert (await limiter.peek()).tokens == 3.0
    assert limiter.stats.releases == 2


async def test_cancelled_acquire_leaves_no_debt(clients, keys):
    limiter = bucket(clients[0], keys, rate=0.5, burst=1)
    await drain(limiter, 1)

    waiter = asyncio.create_task(limiter.acquire())
    await first_wait(limiter)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    # The denied caller reserved nothing, so the bucket contains only what
    # refilled since the drain: at 0.5 tokens/s, under one token and not below 0.
    state = await limiter.peek()
    assert 0.0 <= state.tokens < 1.0


async def test_acquire_gives_up_when_stop_is_set(clients, keys):
    limiter = bucket(clients[0], keys, rate=0.05, burst=1)
    await drain(limiter, 1)
    stop = asyncio.Event()

    waiter = asyncio.create_task(limiter.acquire(stop=stop))
    await first_wait(limiter)
    stop.set()

    # The next token is 20 s away; the stop ends the wait long before.
    with pytest.raises(AcquireStopped) as stopped:
        await asyncio.wait_for(waiter, timeout=5)
    assert stopped.value.cost == 1
    assert 0.0 < stopped.value.waited < 5
    assert limiter.stats.seconds_waited == stopped.value.waited
    assert 0.0 <= (await limiter.peek()).tokens < 1.0


async def test_stopped_acquire_takes_free_token(clients, keys):
    limiter = bucket(clients[0], keys, rate=0.05, burst=1)
    stop = asyncio.Event()
    stop.set()

    assert await limiter.acquire(stop=stop) == 0.0
    with pytest.raises(AcquireStopped):
        await asyncio.wait_for(limiter.acquire(stop=stop), timeout=5)
    assert limiter.stats.waits == 1


async def test_batch_acquire_stops_on_stop(clients, keys):
    limiter = bucket(clients[0], keys, rate=0.05, burst=5, counting="transactions")
    await drain(limiter, 5)
    stop = asyncio.Event()

    waiter = asyncio.create_task(limiter.acquire_for_batch(3, stop=stop))
    await first_wait(limiter)
    stop.set()

    # Three tokens are 60 s away; the stop ends the wait long before.
    with pytest.raises(AcquireStopped) as stopped:
        await asyncio.wait_for(waiter, timeout=5)
    assert stopped.value.cost == 3


async def test_permit_cancelled_before_use_returns_tokens(clients, keys):
    limiter = bucket(clients[0], keys, rate=0.5, burst=2)
    holding = asyncio.Event()

    async def worker():
        async with limiter.permit():
            holding.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(worker())
    await asyncio.wait_for(holding.wait(), 10)
    assert (await limiter.peek()).tokens < 1.5
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert (await limiter.peek()).tokens == 2.0


async def test_permit_used_keeps_tokens_spent(clients, keys):
    limiter = bucket(clients[0], keys, rate=0.5, burst=2)

    async with limiter.permit() as permit:
        permit.mark_used()

    assert (await limiter.peek()).tokens < 1.5
    assert limiter.stats.releases == 0


async def test_bucket_key_expires(clients, keys, sync_client):
    limiter = bucket(clients[0], keys, ttl_seconds=30)
    await drain(limiter, 1)

    ttl_ms = sync_client.pttl(limiter.key)
    assert 0 < ttl_ms <= 30_000


async def test_read_bucket_state(clients, keys, sync_client):
    limiter = bucket(clients[0], keys, rate=8.0, burst=4, cut_interval_seconds=0)
    assert read_bucket_state(sync_client, limiter.key) is None

    await drain(limiter, 1)
    await limiter.penalize()

    state = read_bucket_state(sync_client, limiter.key)
    assert state is not None
    assert state.effective_rate == 4.0
    assert state.configured_rate == 8.0
    assert state.burst == 4.0
    assert 3.0 <= state.tokens <= 4.0
    assert state.idle_seconds >= 0
