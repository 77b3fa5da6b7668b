"""The consume time of `run` ends at the last settled outcome, not when the drain check finds an empty group."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import redis
import redis.asyncio as aioredis

from conftest import invoke_cli, one_server
from consumer.pool import ConsumerPool
from consumer.settings import ConsumerSettings
from consumer.stats import PoolStats
from producer import Producer
from rewardpilot.job import seconds_to_last_outcome, summarise
from rewardpilot.models import Transaction

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp"


def stats_with(results: int = 0, dead_letters: int = 0, duplicates: int = 0,
               last_settled_at: float | None = None) -> PoolStats:
    stats = PoolStats(results=results, dead_letters=dead_letters, duplicates=duplicates)
    stats.last_settled_at = last_settled_at
    return stats


async def drain(url: str, keys) -> PoolStats:
    settings = ConsumerSettings(keys=keys, workers=1, drain=True, block_ms=100)
    client = aioredis.Redis.from_url(url)
    try:
        return await asyncio.wait_for(ConsumerPool(client, settings).run(), timeout=120)
    finally:
        await client.aclose()


# seconds_to_last_outcome and summarise

def test_seconds_end_at_last_settle():
    stats = stats_with(results=3, last_settled_at=100.25)

    assert seconds_to_last_outcome(stats, started=100.0, ended=101.25) == 0.25


def test_seconds_without_settle_end_at_stop():
    assert seconds_to_last_outcome(stats_with(), started=100.0, ended=101.5) == 1.5


def test_summarise_throughput_uses_consume():
    stats = stats_with(results=3, dead_letters=1, last_settled_at=10.5)

    summary = summarise("job-1", 4, stats, publish_seconds=0.1, consume_seconds=0.5, wall_seconds=1.5)
    fields = summary.as_dict()

    assert fields["consume_seconds"] == 0.5
    assert fields["processing_time_seconds"] == 0.5
    assert fields["wall_seconds"] == 1.5
    assert fields["throughput_tps"] == 8.0  # 4 processed in 0.5 s
    assert fields["publish_seconds"] == 0.1


def test_summarise_zero_seconds():
    summary = summarise("job-1", 0, stats_with(), publish_seconds=0.0, consume_seconds=0.0, wall_seconds=0.0)

    assert summary.throughput_tps == 0.0


# The pool records its last settle

async def test_pool_records_last_settle(redis_url, keys):
    client = redis.Redis.from_url(redis_url)
    try:
        Producer(client, keys, max_backlog=None).publish(
            Transaction(transaction_id="t1", user_id="u1", merchant="Shell", amount_usd=Decimal("40.00")))
    finally:
        client.close()

    before = time.monotonic()
    stats = await drain(redis_url, keys)
    after = time.monotonic()

    assert stats.results == 1
    assert stats.last_settled_at is not None
    assert before <= stats.last_settled_at <= after


async def test_pool_dead_letter_counts_as_settle(redis_url, keys):
    client = redis.Redis.from_url(redis_url)
    try:
        client.xadd(keys.transactions, {"not": "a transaction"})
    finally:
        client.close()

    stats = await drain(redis_url, keys)

    assert stats.results == 0
    assert stats.dead_letters == 1
    assert stats.last_settled_at is not None


async def test_pool_idle_records_no_settle(redis_url, keys):
    client = redis.Redis.from_url(redis_url)
    try:
        client.xgroup_create(keys.transactions, keys.group(), id="0", mkstream=True)
    finally:
        client.close()

    stats = await drain(redis_url, keys)

    assert stats.last_settled_at is None


# The command

@one_server
def test_cli_run_consume_time(cli_env, keys, tmp_path):
    source = tmp_path / "one.csv"
    source.write_text(f"{HEADER}\nk1,u1,Shell,gas,40.00,5541,2026-11-02T10:00:00Z\n")
    output = tmp_path / "out.jsonl"

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--json", "--output", str(output)], cli_env)
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    result = json.loads(output.read_text())

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert summary["consume_seconds"] <= summary["wall_seconds"]
    assert summary["processing_time_seconds"] == summary["consume_seconds"]
    # Both figures are rounded (to 0.001 s and 0.1 tx/s), hence the tolerance.
    assert summary["throughput_tps"] == pytest.approx(1 / summary["consume_seconds"], rel=0.1)
    # The pool started before the row was published, so the consume time covers the result's whole
    # life from its publish (whole milliseconds, the stream id's) to its completion.
    completed_at = datetime.fromisoformat(result["completed_at"]).astimezone(timezone.utc)
    published_at = datetime.fromisoformat(result["published_at"]).astimezone(timezone.utc)
    assert (completed_at - published_at).total_seconds() <= summary["consume_seconds"] + 0.002
