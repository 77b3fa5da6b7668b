"""The report agrees with the consumers: users without a wallet, retired cards, and a replay run's caps."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timezone
from decimal import Decimal

import redis.asyncio as aioredis

from conftest import invoke_cli
from consumer.pool import ConsumerPool
from consumer.settings import ConsumerSettings
from rewardpilot import codec
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction
from rewardpilot.report import build_report, cap_status
from rewardpilot.results import read_results
from rewardpilot.wallets import encode_wallet

ENGINE = RulesEngine.default()
RETIRED = "retired-card"


def drugstore(transaction_id: str, user: str, day: int, amount: str = "200.00") -> Transaction:
    return Transaction(transaction_id=transaction_id, user_id=user, merchant="CVS Pharmacy", category="drugstore",
                       mcc="5912", amount_usd=Decimal(amount), timestamp=datetime(2026, 11, day, 15, tzinfo=timezone.utc))


def drain(url: str, keys) -> None:
    async def main():
        client = aioredis.Redis.from_url(url)
        try:
            await asyncio.wait_for(ConsumerPool(client, ConsumerSettings(keys=keys, workers=1, block_ms=100,
                                                                         drain=True)).run(), timeout=60)
        finally:
            await client.aclose()

    asyncio.run(main())


def test_report_no_wallet_matches_results(redis_url, keys, sync_client):
    for day in range(2, 8):
        sync_client.xadd(keys.transactions, codec.encode_transaction(drugstore(f"nw-{day}", "nw", day)))
    drain(redis_url, keys)
    results = list(read_results(sync_client, keys.results()))

    report = build_report(sync_client, keys, "nw", month="2026-11")

    assert len(results) == 6
    assert {result.wallet_source for result in results} == {"catalog"}
    assert report.purchases == 6
    assert report.total.best == sum(result.rewards.cash_value_usd for result in results)
    assert report.caps == []


def test_report_skips_retired_card(redis_url, keys, sync_client, cli_env):
    sync_client.set(keys.wallet("rc"), encode_wallet([RETIRED, "citi-double-cash"]))
    sync_client.sadd(keys.wallet_index, "rc")
    sync_client.xadd(keys.transactions, codec.encode_transaction(drugstore("rc-1", "rc", 3, "40.00")))
    drain(redis_url, keys)

    report = build_report(sync_client, keys, "rc", month="2026-11")
    shown = invoke_cli(["--prefix", keys.prefix, "wallet", "show", "rc"], {**cli_env, "COLUMNS": "200"})
    listed = invoke_cli(["--prefix", keys.prefix, "wallet", "show"], {**cli_env, "COLUMNS": "200"})
    reported = invoke_cli(["--prefix", keys.prefix, "report", "--user", "rc", "--month", "2026-11"], cli_env)

    assert report.purchases == 1
    assert report.by_card_recommended == {"citi-double-cash": report.total}
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert f"{RETIRED} (not in the catalog" in shown.stdout
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert reported.returncode == 0, reported.stderr[-2000:]
    assert "stored wallet names cards the catalog does not have" in reported.stderr


def test_cap_status_reads_run_caps(sync_client, keys):
    field = "amex-gold|us-supermarkets|2026"
    sync_client.hset(keys.cap_spend("u1"), field, 100_00)
    sync_client.hset(keys.cap_spend("u1", "after-change"), field, 2_500_00)

    live = cap_status(sync_client, keys, "u1", ENGINE, today=date(2026, 11, 15))
    replayed = cap_status(sync_client, keys, "u1", ENGINE, today=date(2026, 11, 15), run="after-change")

    assert [status.spent_usd for status in live] == [Decimal("100")]
    assert [status.spent_usd for status in replayed] == [Decimal("2500")]


def test_cap_status_shows_top_category_only(sync_client, keys):
    # Citi Custom Cash: only the category with the most spend in the cycle earns 5%, on up to $500.
    sync_client.hset(keys.cap_spend("u1"), mapping={
        "citi-custom-cash|top:gas|2026-11": 120_00,
        "citi-custom-cash|top:groceries|2026-11": 530_00,
        "citi-custom-cash|top:dining|2026-11": 40_00,
    })

    statuses = cap_status(sync_client, keys, "u1", ENGINE, today=date(2026, 11, 20))

    assert [(status.tally, status.spent_usd, status.remaining_usd) for status in statuses] == [
        ("top:groceries", Decimal("530"), Decimal("0"))]
