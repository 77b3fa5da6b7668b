"""Prometheus metrics of a running consumer process, scraped over HTTP."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import httpx

from conftest import ROOT, free_port, one_server, run_cli
from consumer.metrics import count_http_statuses
from consumer.recommenders.http import HttpRecommender
from consumer.recommenders.in_process import InProcessRecommender
from consumer.stats import Buckets, PoolStats


def scrape(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0).text


def metric_value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@one_server
def test_metrics_endpoint_counts_results(cli_env, keys, tmp_path):
    source = tmp_path / "m.csv"
    source.write_text(
        "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
        + "".join(f"m{i},u{i % 3},Whole Foods,groceries,{10 + i}.00,5411,2026-11-02T10:00:00Z\n" for i in range(25))
    )
    port = free_port()
    consumer = subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "consume", "--block-ms", "200",
         "--metrics-port", str(port)],
        env=cli_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert run_cli(["--prefix", keys.prefix, "publish", str(source)], cli_env).returncode == 0

        text = ""
        for _ in range(100):  # up to about 10 s
            try:
                text = scrape(port)
            except httpx.HTTPError:
                text = ""
            if metric_value(text, "rewardpilot_consumer_transactions_processed_total") == 25:
                break
            time.sleep(0.1)

        assert metric_value(text, "rewardpilot_consumer_transactions_processed_total") == 25
        assert metric_value(text, "rewardpilot_consumer_transactions_failed_total") == 0
        assert metric_value(text, "rewardpilot_consumer_group_lag") == 0
        assert metric_value(text, "rewardpilot_consumer_group_pending") == 0
        assert metric_value(text, "rewardpilot_consumer_batch_size_count") >= 1
        assert metric_value(text, "rewardpilot_consumer_batch_size_sum") == 25
        assert metric_value(text, "rewardpilot_consumer_publish_to_result_seconds_count") == 25
        assert any(
            line.startswith("rewardpilot_consumer_publish_to_result_seconds_bucket{") and 'le="+Inf"' in line
            and line.endswith(" 25.0")
            for line in text.splitlines()
        )
        assert metric_value(text, "rewardpilot_consumer_batch_seconds_count") >= 1
    finally:
        consumer.send_signal(signal.SIGTERM)
        out, err = consumer.communicate(timeout=30)

    assert consumer.returncode == 0, err[-2000:]
    assert '"results": 25' in out


def test_buckets_count_like_prometheus():
    buckets = Buckets((1, 10, 100))
    for value in (0.5, 1, 2, 10, 11, 500):
        buckets.observe(value)

    # le=1 holds 0.5 and 1 (bounds are inclusive), le=10 adds 2 and 10, le=100 adds 11, +Inf adds 500.
    assert buckets.cumulative() == [("1.0", 2), ("10.0", 4), ("100.0", 5), ("+Inf", 6)]
    assert buckets.count == 6
    assert buckets.total == 524.5


def test_http_statuses_counted_per_response():
    statuses = iter([200, 200, 429, 503])

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(statuses), json={})

    client = httpx.AsyncClient(transport=httpx.MockTransport(respond))
    recommender = HttpRecommender("http://127.0.0.1:9", client=client)
    stats = PoolStats()
    assert count_http_statuses(recommender, stats)

    async def call_four_times() -> None:
        for _ in range(4):
            await client.post("http://127.0.0.1:9/recommend", json={})
        await client.aclose()

    asyncio.run(call_four_times())

    assert stats.http_statuses == {200: 2, 429: 1, 503: 1}


def test_http_statuses_skip_in_process():
    assert not count_http_statuses(InProcessRecommender(), PoolStats())


@one_server
def test_metrics_port_in_use_exit_two(cli_env, keys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = run_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100",
                             "--metrics-port", str(port)], cli_env, timeout=60)

    output = " ".join(completed.stderr.split())
    assert completed.returncode == 2
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}" in output
    assert "Traceback" not in completed.stderr


def test_batch_size_buckets_reach_max_batch():
    from consumer.settings import INT_LIMITS

    assert PoolStats().batch_sizes.bounds[-1] == INT_LIMITS["batch_size"][1]


def test_latency_buckets_reach_an_hour():
    """A result held up for minutes by an outage lands in a finite bucket, not only in +Inf."""
    latency = PoolStats().latency_seconds
    for seconds in (45.0, 290.0, 3500.0):
        latency.observe(seconds)

    cumulative = dict(latency.cumulative())
    assert latency.bounds[-1] == 3600.0
    assert cumulative["60.0"] == 1
    assert cumulative["300.0"] == 2
    assert cumulative["3600.0"] == 3
    assert cumulative["10.0"] == 0
