"""Recovery removes consumers that died without leaving their group, and never one with pending entries."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
import structlog.testing

from consumer import recovery
from consumer.build import partitioned
from consumer.group import remove_idle_consumers
from consumer.pool import ConsumerPool
from consumer.recovery import group_streams, idle_consumer_threshold_ms, remove_gone_consumers
from consumer.settings import ConsumerSettings
from test_pipeline import publish, transactions

THRESHOLD_MS = 1500  # short enough for a test, where production uses idle_consumer_threshold_ms


def consumer_table(sync_client, stream: str, group: str) -> dict[str, dict]:
    return {row["name"]: row for row in sync_client.xinfo_consumers(stream, group)}


def wait_idle(sync_client, stream: str, group: str, names: list[str], min_idle_ms: int) -> None:
    """Poll XINFO CONSUMERS (at most 400 times) until every named consumer is idle at least ``min_idle_ms``."""
    table = {}
    for _ in range(400):
        table = consumer_table(sync_client, stream, group)
        if all(table[name]["idle"] >= min_idle_ms for name in names):
            return
        time.sleep(0.05)
    raise AssertionError(f"consumers {names} never reached {min_idle_ms} ms idle: {table}")


def read_as(sync_client, stream: str, group: str, consumer: str, count: int) -> list[str]:
    reply = sync_client.xreadgroup(group, consumer, {stream: ">"}, count=count)
    return [entry_id for entry_id, _ in reply[0][1]] if reply else []


def test_threshold_floor_and_scale():
    assert idle_consumer_threshold_ms(60_000) == 3_600_000
    assert idle_consumer_threshold_ms(1_000) == 3_600_000
    assert idle_consumer_threshold_ms(600_000) == 6_000_000


async def test_removes_idle_keeps_pending(redis_url, keys, sync_client):
    publish(redis_url, keys, transactions(5))
    stream, group = keys.transactions, keys.group()
    sync_client.xgroup_create(stream, group, id="0")
    sync_client.xack(stream, group, *read_as(sync_client, stream, group, "killed-idle", 2))
    pending_ids = read_as(sync_client, stream, group, "killed-holding", 1)
    sync_client.xack(stream, group, *read_as(sync_client, stream, group, "self", 1))
    wait_idle(sync_client, stream, group, ["killed-idle", "killed-holding", "self"], THRESHOLD_MS)
    sync_client.xack(stream, group, *read_as(sync_client, stream, group, "alive", 1))

    client = aioredis.Redis.from_url(redis_url)
    try:
        removed = await remove_idle_consumers(client, stream, group, THRESHOLD_MS, keep="self")
    finally:
        await client.aclose()

    table = consumer_table(sync_client, stream, group)
    assert [consumer.name for consumer in removed] == ["killed-idle"]
    assert removed[0].idle_ms >= THRESHOLD_MS
    assert "killed-idle" not in table
    assert table["killed-holding"]["pending"] == len(pending_ids)
    assert "self" in table
    assert "alive" in table
    # The entries the holding consumer took stay pending for XAUTOCLAIM.
    assert sync_client.xpending(stream, group)["pending"] == 1


async def test_missing_stream_or_group_removes_nothing(redis_url, keys, sync_client):
    client = aioredis.Redis.from_url(redis_url)
    try:
        no_stream = await remove_idle_consumers(client, keys.transactions, keys.group(), 0)
        sync_client.xadd(keys.transactions, {"field": "value"})
        no_group = await remove_idle_consumers(client, keys.transactions, keys.group(), 0)
    finally:
        await client.aclose()
    assert no_stream == []
    assert no_group == []


def short_threshold(monkeypatch) -> ConsumerSettings:
    """Lower the floor so that 10 visibility timeouts of 150 ms (1.5 s) is the threshold."""
    monkeypatch.setattr(recovery, "IDLE_CONSUMER_MIN_SECONDS", 0)
    return ConsumerSettings(workers=1, visibility_timeout_ms=THRESHOLD_MS // recovery.IDLE_CONSUMER_TIMEOUTS)


async def test_pool_pass_logs_removal(redis_url, keys, sync_client, monkeypatch):
    settings = short_threshold(monkeypatch)
    settings.keys = keys
    publish(redis_url, keys, transactions(3))
    stream, group = keys.transactions, settings.group_name
    sync_client.xgroup_create(stream, group, id="0")
    sync_client.xack(stream, group, *read_as(sync_client, stream, group, "c2", 1))
    pending_ids = read_as(sync_client, stream, group, "p3", 1)
    wait_idle(sync_client, stream, group, ["c2", "p3"], THRESHOLD_MS)

    client = aioredis.Redis.from_url(redis_url)
    pool = ConsumerPool(client, settings)
    try:
        with structlog.testing.capture_logs() as logs:
            removed = await remove_gone_consumers(pool)
    finally:
        await pool.recommender.aclose()
        await client.aclose()

    lines = [event for event in logs if event["event"] == "removed idle consumer without pending entries from the group"]
    table = consumer_table(sync_client, stream, group)
    assert removed == 1
    assert len(lines) == 1
    assert lines[0]["removed_consumer"] == "c2"
    assert lines[0]["idle_seconds"] >= THRESHOLD_MS // 1000
    assert lines[0]["stream"] == stream
    assert "c2" not in table
    assert table["p3"]["pending"] == len(pending_ids)


async def test_partitioned_streams_all_checked(redis_url, keys, sync_client, monkeypatch):
    settings = short_threshold(monkeypatch)
    settings.keys = keys
    settings.partitions = 2
    settings.consumer = "me"
    client = aioredis.Redis.from_url(redis_url)
    settings, transport = partitioned(client, settings)
    pool = ConsumerPool(client, settings, transport=transport)
    try:
        await transport.open()
        streams = group_streams(pool)
        for stream in streams:
            sync_client.xgroup_createconsumer(stream, settings.group_name, "killed")
        for stream in streams:
            wait_idle(sync_client, stream, settings.group_name, ["killed"], THRESHOLD_MS)
        removed = await remove_gone_consumers(pool)
        tables = [consumer_table(sync_client, stream, settings.group_name) for stream in streams]
    finally:
        await transport.close()
        await pool.recommender.aclose()
        await client.aclose()

    assert streams == transport.streams
    assert len(streams) == 2
    assert removed == 2
    for table in tables:
        assert "killed" not in table


async def test_recovery_loop_removes_dead_consumer(redis_url, keys, sync_client, monkeypatch):
    settings = short_threshold(monkeypatch)
    settings.keys = keys
    settings.block_ms = 100
    stream, group = keys.transactions, settings.group_name
    sync_client.xadd(stream, {"field": "value"})
    sync_client.xgroup_create(stream, group, id="$")
    sync_client.xgroup_createconsumer(stream, group, "killed")
    wait_idle(sync_client, stream, group, ["killed"], THRESHOLD_MS)

    client = aioredis.Redis.from_url(redis_url)
    pool = ConsumerPool(client, settings)
    running = asyncio.create_task(pool.run())
    table = {}
    stopped_early = False
    try:
        for _ in range(400):
            table = consumer_table(sync_client, stream, group)
            stopped_early = running.done()
            if "killed" not in table or stopped_early:
                break
            await asyncio.sleep(0.05)
    finally:
        pool.stop()
        await asyncio.wait_for(running, timeout=60)
        await pool.recommender.aclose()
        await client.aclose()

    assert not stopped_early
    assert "killed" not in table
