"""Prometheus metrics of a running consumer process, scraped over HTTP."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx

from conftest import ROOT, free_port, run_cli


def scrape(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0).text


def metric_value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


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
    finally:
        consumer.send_signal(signal.SIGTERM)
        out, err = consumer.communicate(timeout=30)

    assert consumer.returncode == 0, err[-2000:]
    assert '"results": 25' in out
