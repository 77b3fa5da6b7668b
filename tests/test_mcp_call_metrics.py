"""MCP recommender responses counted by HTTP status, directly and on a running consumer's /metrics."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from conftest import ROOT, free_port, one_server, run_cli
from consumer.guarded import GuardedRecommender
from consumer.metrics import count_http_statuses
from consumer.recommenders.base import WorkItem
from consumer.recommenders.mcp import McpRecommender
from consumer.stats import PoolStats
from orchestrator_servers import UvicornThread
from rewardpilot.engine import RulesEngine
from rewardpilot.logs import get_logger
from rewardpilot.models import Recommendation, Transaction
from rewardpilot.orchestrator import create_app

API_KEY = "mcp-metrics-key-31"
CALLS_METRIC = "rewardpilot_consumer_orchestrator_calls_total"


@pytest.fixture(scope="module")
def orchestrator():
    with UvicornThread(create_app(RulesEngine.default(), api_key=API_KEY)) as running:
        yield running


def work_item(transaction_id: str) -> WorkItem:
    transaction = Transaction(
        transaction_id=transaction_id, user_id="u-1", merchant="Whole Foods", category="groceries",
        amount_usd="40.00", mcc="5411",
    )
    return WorkItem(transaction=transaction, wallet=("amex-gold",), wallet_source="user")


def metric_value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def calls_by_status(text: str) -> dict[str, float]:
    """Return the orchestrator call counter of a /metrics page, keyed by its status label."""
    counts = {}
    for line in text.splitlines():
        if line.startswith(CALLS_METRIC + "{"):
            status = re.search(r'status="([^"]*)"', line)
            if status is not None:
                counts[status.group(1)] = float(line.rsplit(" ", 1)[1])
    return counts


async def test_mcp_statuses_counted(orchestrator):
    recommender = McpRecommender(f"{orchestrator.url}/mcp", api_key=API_KEY, timeout=5.0)
    stats = PoolStats()
    assert count_http_statuses(recommender, stats)

    try:
        outcomes = await recommender.recommend([work_item("mc-1"), work_item("mc-2"), work_item("mc-3")])
    finally:
        await recommender.aclose()

    assert all(isinstance(outcome, Recommendation) for outcome in outcomes)
    # The session's own requests (initialize and its notification) come on top of the three tool calls.
    assert stats.http_statuses[200] >= 3
    assert set(stats.http_statuses) == {200}


async def test_mcp_statuses_through_guard(orchestrator):
    recommender = McpRecommender(f"{orchestrator.url}/mcp", api_key=API_KEY, timeout=5.0)
    stats = PoolStats()
    guarded = GuardedRecommender(recommender, stats=stats, log=get_logger("tests.mcp_call_metrics"))
    assert count_http_statuses(guarded, stats)

    try:
        outcomes = await guarded.call([work_item("mc-guard")], ["1-0"])
    finally:
        await recommender.aclose()

    assert isinstance(outcomes[0], Recommendation)
    assert stats.http_statuses[200] >= 1


async def test_mcp_wrong_key_counts_401(orchestrator):
    recommender = McpRecommender(f"{orchestrator.url}/mcp", api_key="wrong-key", timeout=5.0)
    stats = PoolStats()
    assert count_http_statuses(recommender, stats)

    try:
        outcomes = await recommender.recommend([work_item("mc-401")])
    finally:
        await recommender.aclose()

    assert outcomes[0].http_status == 401
    assert stats.http_statuses[401] >= 1
    assert 200 not in stats.http_statuses


async def test_mcp_hook_added_to_open_session(orchestrator):
    recommender = McpRecommender(f"{orchestrator.url}/mcp", api_key=API_KEY, timeout=5.0)
    stats = PoolStats()
    try:
        await recommender.connect()
        assert count_http_statuses(recommender, stats)
        await recommender.recommend([work_item("mc-late-1"), work_item("mc-late-2")])
    finally:
        await recommender.aclose()

    assert stats.http_statuses[200] >= 2


@one_server
def test_consumer_metrics_show_mcp_statuses(cli_env, keys, tmp_path, orchestrator):
    source = tmp_path / "mcp.csv"
    source.write_text(
        "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
        + "".join(f"mm{i},u{i % 3},Whole Foods,groceries,{10 + i}.00,5411,2026-11-02T10:00:00Z\n" for i in range(12))
    )
    env = dict(cli_env, ORCHESTRATOR_API_KEY=API_KEY)
    port = free_port()
    consumer = subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "consume", "--block-ms", "200",
         "--orchestrator", f"{orchestrator.url}/mcp", "--metrics-port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert run_cli(["--prefix", keys.prefix, "publish", str(source)], env).returncode == 0

        text = ""
        for _ in range(150):  # up to about 15 s
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0).text
            except httpx.HTTPError:
                text = ""
            if metric_value(text, "rewardpilot_consumer_transactions_processed_total") == 12:
                break
            time.sleep(0.1)
    finally:
        consumer.send_signal(signal.SIGTERM)
        out, err = consumer.communicate(timeout=30)

    assert consumer.returncode == 0, err[-2000:]
    assert '"results": 12' in out
    assert metric_value(text, "rewardpilot_consumer_transactions_processed_total") == 12
    counts = calls_by_status(text)
    assert counts.get("200", 0) >= 12, text
    assert set(counts) == {"200"}, text
