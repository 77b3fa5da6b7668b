"""`rewardpilot status`: an idle orchestrator rate limit, and a job's result count in --json."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from consumer.ratelimit import RateLimitConfig, RedisTokenBucket
from rewardpilot.cli.status_cmd import _rate_text, _render
from rewardpilot.status import JOB_RESULTS, RATE_LIMIT_ACTIVE_SECONDS, collect_status, rate_limit_status
from rewardpilot.streams import StreamKeys

from conftest import invoke_cli, one_server


async def use_bucket(redis_url: str, keys: StreamKeys, rate: str = "1/min") -> None:
    """Take one token, as a consumer started with ``--rate RATE`` does before its first call."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        limiter = RedisTokenBucket(client, RateLimitConfig.from_options(rate, 10), keys=keys)
        await limiter.acquire()
    finally:
        await client.aclose()


def age_bucket(sync_client, keys: StreamKeys, seconds: float) -> None:
    """Move the bucket's last update ``seconds`` into the past by the server's clock."""
    server_seconds, micros = sync_client.time()
    now_us = int(server_seconds) * 1_000_000 + int(micros)
    sync_client.hset(keys.rate_limit(), "updated_us", str(now_us - int(seconds * 1_000_000)))


def one_line(text: str) -> str:
    """Join the lines of a table caption that rich wrapped at the table's width."""
    return " ".join(text.split())


def rate_limit(idle_seconds: float, **changes) -> dict:
    values = {"configured_rate": 10.0, "effective_rate": 5.0, "tokens": 2.0, "burst": 4.0,
              "idle_seconds": idle_seconds, "active": idle_seconds <= RATE_LIMIT_ACTIVE_SECONDS}
    return {**values, **changes}


# The rate limit's `active` flag and its line


async def test_bucket_just_used_is_active(redis_url, keys, sync_client):
    await use_bucket(redis_url, keys)

    status = rate_limit_status(sync_client, keys)

    assert status["active"] is True
    assert status["configured_rate"] == pytest.approx(1 / 60)
    assert status["idle_seconds"] < RATE_LIMIT_ACTIVE_SECONDS


async def test_bucket_unused_for_minutes_is_idle(redis_url, keys, sync_client):
    await use_bucket(redis_url, keys)
    age_bucket(sync_client, keys, 300)

    status = rate_limit_status(sync_client, keys)

    assert status["active"] is False
    assert status["idle_seconds"] >= 300
    assert status["configured_rate"] == pytest.approx(1 / 60)


async def test_bucket_unused_for_half_minute_active(redis_url, keys, sync_client):
    await use_bucket(redis_url, keys)
    age_bucket(sync_client, keys, 30)

    assert rate_limit_status(sync_client, keys)["active"] is True


def test_no_bucket_is_none(sync_client, keys):
    assert rate_limit_status(sync_client, keys) is None


@pytest.mark.parametrize(
    ("idle_seconds", "expected"),
    [
        (75.0, "orchestrator rate limit: idle, last used 75 s ago"),
        (300.0, "orchestrator rate limit: idle, last used 5 min ago"),
        (9000.0, "orchestrator rate limit: idle, last used 2.5 h ago"),
    ],
)
def test_idle_line_has_no_rate(idle_seconds, expected):
    line = _rate_text(rate_limit(idle_seconds))

    assert line == expected
    assert "/s" not in line


def test_active_line_has_rates():
    line = _rate_text(rate_limit(3.0))

    assert line == "orchestrator rate limit: 5/s effective of 10/s configured, 2.0 tokens"


def test_snapshot_without_active_key_shows_rates():
    """A snapshot from before the `active` key existed renders as it did then."""
    old = rate_limit(900.0)
    del old["active"]

    assert "5/s effective of 10/s configured" in _rate_text(old)


def test_job_line_says_shared():
    assert _rate_text(None, "j1") == (
        "orchestrator rate limit (one for the whole prefix): not in use"
    )
    assert _rate_text(rate_limit(600.0), "j1").endswith("idle, last used 10 min ago")


# A job's result count


def test_job_snapshot_counts_under_job(sync_client, keys):
    job_keys = StreamKeys(prefix=keys.prefix, job="j7")
    sync_client.xadd(job_keys.results(), {"data": "{}"})
    sync_client.xadd(job_keys.results(), {"data": "{}"})
    sync_client.xadd(keys.results(), {"data": "{}"})

    job_snapshot = collect_status(sync_client, job_keys)
    live_snapshot = collect_status(sync_client, keys)

    assert job_snapshot["results"] == {JOB_RESULTS: 2}
    assert live_snapshot["results"] == {"live": 1}
    assert "results of job j7: 2" in str(_render(job_snapshot, "j7").caption)


@one_server
def test_status_job_json_key(cli_env, keys, sync_client):
    job_keys = StreamKeys(prefix=keys.prefix, job="json-job")
    sync_client.xadd(job_keys.transactions, {"data": "{}"})
    sync_client.xadd(job_keys.results(), {"data": "{}"})

    completed = invoke_cli(["--prefix", keys.prefix, "status", "--job", "json-job", "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    snapshot = json.loads(completed.stdout)
    assert snapshot["results"] == {"job": 1}
    assert snapshot["rate_limit"] is None


@one_server
def test_status_idle_rate_cli(redis_url, cli_env, keys, sync_client):
    """A bucket last used 4 minutes ago shows as idle in the table and inactive in --json, also for a job."""
    asyncio.run(use_bucket(redis_url, keys))
    age_bucket(sync_client, keys, 240)
    job_keys = StreamKeys(prefix=keys.prefix, job="quiet-job")
    sync_client.xadd(job_keys.transactions, {"data": "{}"})

    table = invoke_cli(["--prefix", keys.prefix, "status"], cli_env)
    job_table = invoke_cli(["--prefix", keys.prefix, "status", "--job", "quiet-job"], cli_env)
    as_json = invoke_cli(["--prefix", keys.prefix, "status", "--json"], cli_env)

    assert table.returncode == 0, table.stderr[-2000:]
    assert "orchestrator rate limit: idle, last used 4 min ago" in one_line(table.stdout)
    assert "configured" not in table.stdout
    assert job_table.returncode == 0, job_table.stderr[-2000:]
    assert "(one for the whole prefix): idle, last used 4 min ago" in one_line(job_table.stdout)
    assert "configured" not in job_table.stdout
    assert as_json.returncode == 0, as_json.stderr[-2000:]
    assert json.loads(as_json.stdout)["rate_limit"]["active"] is False
