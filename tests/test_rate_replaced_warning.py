"""The warning a consumer logs when its --rate or --burst replaces another consumer's shared bucket settings."""

from __future__ import annotations

import asyncio
import csv
import json

import pytest
import redis.asyncio as aioredis
import redis.exceptions
import structlog.testing

from consumer.ratelimit import RateLimitConfig, RedisTokenBucket

from conftest import invoke_cli, one_server

REPLACED = "replacing the shared rate limit"


@pytest.fixture
async def clients(redis_url):
    """Two independent asyncio clients, as two consumer processes would have."""
    first = aioredis.Redis.from_url(redis_url)
    second = aioredis.Redis.from_url(redis_url)
    yield first, second
    await first.aclose()
    await second.aclose()


def bucket(client, keys, rate: float, burst: int) -> RedisTokenBucket:
    return RedisTokenBucket(client, RateLimitConfig(rate=rate, burst=burst), keys=keys)


def replaced_warnings(logs: list[dict]) -> list[dict]:
    return [event for event in logs if REPLACED in event["event"]]


async def test_other_rate_warns_once(clients, keys):
    first = bucket(clients[0], keys, rate=100 / 60, burst=10)
    second = bucket(clients[1], keys, rate=1 / 60, burst=10)
    await first.acquire()

    with structlog.testing.capture_logs() as logs:
        await second.acquire()
        await second.acquire()
        await second.release(1)

    warnings = replaced_warnings(logs)
    assert len(warnings) == 1
    warning = warnings[0]
    assert warning["log_level"] == "warning"
    assert warning["key"] == keys.rate_limit()
    assert warning["previous_rate_per_second"] == 1.667
    assert warning["rate_per_second"] == 0.01667
    assert warning["previous_burst"] == 10
    assert warning["burst"] == 10


async def test_other_burst_warns(clients, keys):
    first = bucket(clients[0], keys, rate=5.0, burst=3)
    second = bucket(clients[1], keys, rate=5.0, burst=8)
    await first.acquire()

    with structlog.testing.capture_logs() as logs:
        await second.acquire()

    warnings = replaced_warnings(logs)
    assert len(warnings) == 1
    assert warnings[0]["previous_burst"] == 3
    assert warnings[0]["burst"] == 8
    assert warnings[0]["previous_rate_per_second"] == 5.0
    assert warnings[0]["rate_per_second"] == 5.0


async def test_warning_names_both_consumers(clients, keys):
    """The warning names the consumer, group and run that replace the values, and the consumer that set them."""
    first = bucket(clients[0], keys, rate=20.0, burst=5)
    first.bind_log(consumer="m8", group="rp-consumers", run="live")
    second = bucket(clients[1], keys, rate=1.0, burst=5)
    second.bind_log(consumer="m9", group="rp-consumers", run="live")
    await first.acquire()

    with structlog.testing.capture_logs() as logs:
        await second.acquire()

    warnings = replaced_warnings(logs)
    assert len(warnings) == 1
    assert warnings[0]["consumer"] == "m9"
    assert warnings[0]["group"] == "rp-consumers"
    assert warnings[0]["run"] == "live"
    assert warnings[0]["previous_set_by"] == "m8"
    assert warnings[0]["previous_rate_per_second"] == 20.0
    assert warnings[0]["rate_per_second"] == 1.0


async def test_other_counting_warns(clients, keys):
    """Counting transactions where the bucket counted requests changes what a token pays for, so it warns."""
    first = bucket(clients[0], keys, rate=5.0, burst=10)
    second = RedisTokenBucket(clients[1], RateLimitConfig(rate=5.0, burst=10, counting="transactions"), keys=keys)
    await first.acquire()

    with structlog.testing.capture_logs() as logs:
        await second.acquire()

    warnings = replaced_warnings(logs)
    assert len(warnings) == 1
    assert warnings[0]["previous_counting"] == "requests"
    assert warnings[0]["counting"] == "transactions"
    assert warnings[0]["previous_set_by"] is None  # the first limiter was never bound to a consumer


async def test_same_settings_no_warning(clients, keys):
    first = bucket(clients[0], keys, rate=100 / 60, burst=10)
    second = bucket(clients[1], keys, rate=100 / 60, burst=10)
    await first.acquire()

    with structlog.testing.capture_logs() as logs:
        await second.acquire()

    assert replaced_warnings(logs) == []


async def test_new_bucket_no_warning(clients, keys):
    limiter = bucket(clients[0], keys, rate=2.0, burst=4)

    with structlog.testing.capture_logs() as logs:
        await limiter.acquire()

    assert replaced_warnings(logs) == []


async def test_later_change_not_warned_again(clients, keys):
    """Only a limiter's first write compares settings, so a later change by another consumer logs nothing here."""
    first = bucket(clients[0], keys, rate=4.0, burst=4)
    second = bucket(clients[1], keys, rate=2.0, burst=4)
    await first.acquire()
    await second.acquire()

    with structlog.testing.capture_logs() as logs:
        await first.acquire()

    assert replaced_warnings(logs) == []


async def test_peek_does_not_use_check(clients, keys):
    """A peek writes nothing, so the first acquire after it still compares the stored settings."""
    first = bucket(clients[0], keys, rate=4.0, burst=4)
    second = bucket(clients[1], keys, rate=3.0, burst=4)
    await first.acquire()

    with structlog.testing.capture_logs() as logs:
        await second.peek()
        peeked = list(logs)
        await second.acquire()

    assert replaced_warnings(peeked) == []
    assert len(replaced_warnings(logs)) == 1


async def test_concurrent_first_calls_warn_once(clients, keys):
    """Callers of one limiter that start together log one warning, and none writes before the check reads."""
    first = bucket(clients[0], keys, rate=4.0, burst=10)
    second = bucket(clients[1], keys, rate=9.0, burst=10)
    await first.acquire()

    with structlog.testing.capture_logs() as logs:
        await asyncio.gather(*(second.acquire() for _ in range(6)))

    warnings = replaced_warnings(logs)
    assert len(warnings) == 1
    assert warnings[0]["previous_rate_per_second"] == 4.0
    assert warnings[0]["rate_per_second"] == 9.0


async def test_wrong_key_type_raises(clients, keys):
    """A key that is not a hash fails the check with Redis's WRONGTYPE error, and the next call checks again."""
    await clients[0].set(keys.rate_limit(), "not a bucket")
    limiter = bucket(clients[1], keys, rate=2.0, burst=4)

    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await limiter.acquire()

    await clients[0].delete(keys.rate_limit())
    with structlog.testing.capture_logs() as logs:
        await limiter.acquire()

    assert replaced_warnings(logs) == []
    assert limiter.stats.acquires == 2


@one_server
def test_consume_logs_replaced_rate(cli_env, keys, tmp_path):
    """`consume --rate` run after another consumer's rate logs the warning once on stderr, with both rates."""
    source = tmp_path / "one.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["transaction_id", "user_id", "merchant", "category", "amount_usd", "mcc", "timestamp"])
        writer.writerow(["r1", "u1", "Whole Foods", "groceries", "20.00", "5411", "2026-11-02T10:00:00Z"])
        writer.writerow(["r2", "u2", "Shell", "gas", "30.00", "5541", "2026-11-02T10:00:00Z"])
    published = invoke_cli(["--prefix", keys.prefix, "publish", str(source)], cli_env)
    assert published.returncode == 0, published.stderr[-2000:]

    env = {**cli_env, "RP_LOG_LEVEL": "INFO"}
    earlier = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "200",
                          "--rate", "100/min", "--burst", "10"], env)
    assert earlier.returncode == 0, earlier.stderr[-2000:]
    assert REPLACED not in earlier.stderr

    source.write_text(source.read_text().replace("r1,", "r3,").replace("r2,", "r4,"))
    assert invoke_cli(["--prefix", keys.prefix, "publish", str(source)], cli_env).returncode == 0
    later = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "200",
                        "--rate", "1/min", "--burst", "10"], env)
    assert later.returncode == 0, later.stderr[-2000:]

    lines = [json.loads(line) for line in later.stderr.splitlines() if REPLACED in line]
    assert len(lines) == 1
    assert lines[0]["level"] == "warning"
    assert lines[0]["previous_rate_per_second"] == 1.667
    assert lines[0]["rate_per_second"] == 0.01667
