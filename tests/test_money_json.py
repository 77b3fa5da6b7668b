"""Money totals in JSON output always have two decimals, also when nothing was added to them."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from conftest import invoke_cli, one_server
from consumer.stats import PoolStats
from rewardpilot.codec import encode_transaction
from rewardpilot.job import JobSummary
from rewardpilot.models import Transaction
from rewardpilot.money import usd_text
from rewardpilot.report import CapStatus, Report, Totals


@pytest.mark.parametrize("amount, text", [
    (Decimal("0"), "0.00"),
    (Decimal("1500"), "1500.00"),
    (Decimal(12340) / 100, "123.40"),
    (Decimal("-5795.00"), "-5795.00"),
    (Decimal("20296.04"), "20296.04"),
])
def test_usd_text_two_decimals(amount, text):
    assert usd_text(amount) == text


def test_pool_stats_total_without_results():
    stats = PoolStats()

    assert stats.as_dict()["total_rewards_usd"] == "0.00"
    assert str(stats.total_rewards_usd) == "0.00"  # the job summary reads the Decimal itself


def test_job_summary_total_without_results():
    summary = JobSummary(job="j", total_transactions=1, successful=0, failed=1, already_processed=0,
                         total_rewards=Decimal("0"), processing_time_seconds=0.1, throughput_tps=10.0,
                         publish_seconds=0.1, consume_seconds=0.1)

    assert summary.as_dict()["total_rewards"] == "0.00"


def test_report_totals_without_purchases():
    report = Report(user_id="u1", period="2026-11", purchases=0, unknown_card_used=0, total=Totals())

    total = report.to_json()["total"]

    assert (total["spend"], total["earned"], total["best"], total["missed"]) == ("0.00", "0.00", "0.00", "0.00")


def test_report_cap_amounts_two_decimals():
    cap = CapStatus(card_id="chase-freedom-flex", tally="q", period="2026-Q4", cap_usd=Decimal("1500"),
                    spent_usd=Decimal(150000) / 100, remaining_usd=Decimal("0"), period_ends=date(2026, 12, 31),
                    runs_out_on=None, today=date(2026, 11, 2), time_zone="America/New_York")
    report = Report(user_id="u1", period="2026-11", purchases=0, unknown_card_used=0, total=Totals(), caps=[cap])

    data = report.to_json()["caps"][0]

    assert (data["cap_usd"], data["spent_usd"], data["remaining_usd"]) == ("1500.00", "1500.00", "0.00")


@one_server
def test_cli_consume_only_dead_letters_total(cli_env, keys, sync_client):
    sync_client.xadd(keys.transactions, {"data": "{not json"})

    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain"], cli_env)

    assert completed.returncode == 1, completed.stderr[-2000:]  # dead letters make a drain exit 1
    stats = json.loads(completed.stdout.strip().splitlines()[-1])
    assert stats["dead_letters"] == 1
    assert stats["results"] == 0
    assert stats["total_rewards_usd"] == "0.00"


@one_server
def test_cli_replay_compare_without_live_totals(cli_env, keys, sync_client):
    purchase = Transaction(transaction_id="m-1", user_id="u1", merchant="Corner Grocer", category="groceries",
                           amount_usd=Decimal("20.00"), mcc="5411", timestamp=datetime(2026, 11, 1, tzinfo=timezone.utc))
    sync_client.xadd(keys.transactions, encode_transaction(purchase))  # with no live result to compare with

    completed = invoke_cli(["--prefix", keys.prefix, "replay", "--start", "0", "--run", "no-live", "--compare",
                            "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    comparison = json.loads(completed.stdout.strip().splitlines()[-1])["comparison"]
    assert comparison["missing_live"] == ["m-1"]
    assert comparison["live_total_usd"] == "0.00"
    assert comparison["replay_total_usd"] == "0.00"
    assert comparison["total_change_usd"] == "0.00"
