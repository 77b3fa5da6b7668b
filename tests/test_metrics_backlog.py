"""The backlog gauges of ``consume --metrics-port``: partitions, REDIS_PASSWORD, read failures, new gauges."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest
import redis
import redis.asyncio as aioredis
import structlog.testing

from conftest import ROOT, ValkeyProcess, free_port, one_server, run_cli
from consumer.metrics import PoolCollector
from consumer.pool import ConsumerPool
from consumer.settings import ConsumerSettings
from consumer.transports.partitioned import PartitionedStreamTransport
from rewardpilot.streams import StreamKeys
from test_metrics import metric_value, scrape

PASSWORD = "metrics-pw-1"


@pytest.fixture
def server(tmp_path):
    valkey = ValkeyProcess(tmp_path / "valkey", password=PASSWORD)
    valkey.start()
    yield valkey
    valkey.stop()


def gauges(collector: PoolCollector) -> dict[str, float]:
    return {sample.name: sample.value for family in collector.collect() for sample in family.samples}


def partitioned_pool(keys: StreamKeys, partitions: int) -> ConsumerPool:
    # The pool is built but never run, so its client never connects.
    settings = ConsumerSettings(keys=keys, consumer="m1", partitions=partitions)
    client = aioredis.Redis()
    return ConsumerPool(client, settings, transport=PartitionedStreamTransport(client, settings, "m1"))


def fill_partitions(client: redis.Redis, pool: ConsumerPool) -> None:
    """Give partition 0 two unread entries and partition 1 one pending entry from 1970, plus one dead letter."""
    streams = pool.transport.streams
    for stream in streams:
        client.xgroup_create(stream, pool.group, id="0", mkstream=True)
    client.xadd(streams[0], {"data": "a"})
    client.xadd(streams[0], {"data": "b"})
    client.xadd(streams[1], {"data": "c"}, id="1000-0")
    client.xreadgroup(pool.group, "m1", {streams[1]: ">"})
    client.xadd(pool.keys.dead_letters, {"data": "dead"})


def test_partition_backlog_with_redis_password(server, monkeypatch):
    keys = StreamKeys(prefix="mp:")
    pool = partitioned_pool(keys, 3)
    client = redis.Redis.from_url(server.url)
    fill_partitions(client, pool)
    client.close()
    url_without_password = f"redis://127.0.0.1:{server.port}/0"
    monkeypatch.setenv("REDIS_PASSWORD", PASSWORD)

    values = gauges(PoolCollector(pool, url_without_password))

    assert values["rewardpilot_consumer_group_lag"] == 2
    assert values["rewardpilot_consumer_group_pending"] == 1
    assert values["rewardpilot_consumer_group_oldest_pending_seconds"] > 1_000_000  # added at 1970-01-01
    assert values["rewardpilot_consumer_dead_letters"] == 1


def test_backlog_failure_logged_once(server, monkeypatch):
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    pool = partitioned_pool(StreamKeys(prefix="mf:"), 2)
    collector = PoolCollector(pool, f"redis://127.0.0.1:{server.port}/0?password=wrong-{PASSWORD}")

    with structlog.testing.capture_logs() as logs:
        first = gauges(collector)
        second = gauges(collector)

    for values in (first, second):
        assert "rewardpilot_consumer_group_lag" not in values
        assert "rewardpilot_consumer_dead_letters" not in values
        assert "rewardpilot_consumer_batches_total" in values
    warnings = [entry for entry in logs if "reading the group backlog from Redis failed" in entry["event"]]
    assert len(warnings) == 1  # the second failure within the interval is counted, not logged
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["url"].endswith("?password=***")
    assert PASSWORD not in str(warnings[0])


@one_server
def test_scrape_with_partitions(cli_env, keys, tmp_path):
    source = tmp_path / "p.csv"
    source.write_text(
        "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
        + "".join(f"p{i},u{i},Whole Foods,groceries,{10 + i}.00,5411,2026-11-02T10:00:00Z\n" for i in range(12))
    )
    port = free_port()
    consumer = subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "consume", "--block-ms", "200",
         "--partitions", "3", "--metrics-port", str(port)],
        env=cli_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        published = run_cli(["--prefix", keys.prefix, "publish", "--partitions", "3", str(source)], cli_env)
        assert published.returncode == 0, published.stderr[-3000:]
        text = ""
        for _ in range(150):  # up to about 15 s
            try:
                text = scrape(port)
            except httpx.HTTPError:
                text = ""
            if metric_value(text, "rewardpilot_consumer_transactions_processed_total") == 12:
                break
            time.sleep(0.1)
    finally:
        consumer.send_signal(signal.SIGTERM)
        _, err = consumer.communicate(timeout=30)

    assert metric_value(text, "rewardpilot_consumer_transactions_processed_total") == 12, err[-3000:]
    assert metric_value(text, "rewardpilot_consumer_group_lag") == 0
    assert metric_value(text, "rewardpilot_consumer_group_pending") == 0
    assert metric_value(text, "rewardpilot_consumer_group_oldest_pending_seconds") == 0
    assert metric_value(text, "rewardpilot_consumer_dead_letters") == 0
