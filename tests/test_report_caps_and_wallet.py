"""report: the caps of the card used, the run's wallet, and the date that chooses each cap's current period.

Terms from rewardpilot/data/cards.json (sources cited there):
* Blue Cash Preferred (amex-blue-cash-preferred) earns 6% at U.S. supermarkets on up to
  $6,000 a calendar year, then 1%.
* Amex Gold earns 4x at U.S. supermarkets on up to $25,000 a calendar year, points at 2.0
  cents (valuations.json): 8% of the amount.
* Citi Double Cash earns 2% everywhere.
Cap periods end at midnight Eastern Time (the cards' ``time_zone``).

Card used (user u-cu, wallet Amex Gold and Blue Cash Preferred, every purchase paid with Blue
Cash Preferred): $5,000 at Kroger on January 10 earns 6% = $300.00. $5,000 on February 10
earns $1,000 x 6% + $4,000 x 1% = $100.00. The year earned $400.00; Gold would have earned
8% of $10,000 = $800.00.

Run wallet (user u-nw, no stored wallet, `run --wallet amex-blue-cash-preferred,citi-double-cash`):
* $5,600 on March 1: Blue Cash Preferred 6% = $336.00.
* $1,000 on March 2: $400 x 6% + $600 x 1% = $30.00 (Double Cash: $20.00). The cap fills.
* $50 on March 3: Double Cash $1.00 (Blue Cash Preferred 1% = $0.50).
* $50 at 2027-01-01T04:30Z, 23:30 Eastern on December 31: 2026's, Double Cash $1.00.
The results total $368.00. Against the whole catalog, Gold's 8% gives 0.08 x $6,700 = $536.00.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime, timezone
from decimal import Decimal

import redis.asyncio as aioredis

from conftest import add_with_result, invoke_cli, one_server
from consumer.pool import ConsumerPool
from consumer.settings import ConsumerSettings
from rewardpilot import codec, wallets
from rewardpilot.engine import RulesEngine
from rewardpilot.job import record_run_wallet, run_wallet_key, stored_run_wallet
from rewardpilot.models import Transaction
from rewardpilot.report import build_report, cap_status
from rewardpilot.report_charts import render_html
from rewardpilot.results import read_results
from rewardpilot.streams import StreamKeys

ENGINE = RulesEngine.default()
BCP = "amex-blue-cash-preferred"
RUN_WALLET = [BCP, "citi-double-cash"]
BCP_2026 = f"{BCP}|us-supermarkets|2026"
BCP_2027 = f"{BCP}|us-supermarkets|2027"

RUN_WALLET_ROWS = [
    ("t11-1", "5600.00", "2026-03-01T15:00:00Z"),
    ("t11-2", "1000.00", "2026-03-02T15:00:00Z"),
    ("t11-3", "50.00", "2026-03-03T15:00:00Z"),
    ("t11-4", "50.00", "2027-01-01T04:30:00Z"),
]


def kroger(transaction_id: str, user: str, amount: str, timestamp: str, card_used: str | None = None) -> Transaction:
    return Transaction(transaction_id=transaction_id, user_id=user, merchant="Kroger", mcc="5411",
                       amount_usd=amount, timestamp=timestamp, card_used=card_used)


def publish_card_used_rows(client, keys, card_used: str | None = None) -> None:
    """Store u-cu's wallet and put two $5,000 Kroger purchases and their results on the streams."""
    cards = ["amex-gold", BCP]
    wallets.set_wallet(client, keys, "u-cu", cards, ENGINE.catalog)
    for transaction_id, timestamp in (("t12-1", "2026-01-10T15:00:00Z"), ("t12-2", "2026-02-10T15:00:00Z")):
        add_with_result(client, keys, kroger(transaction_id, "u-cu", "5000.00", timestamp, card_used), cards, ENGINE)


def consume_with_run_wallet(url: str, keys, user: str = "u-nw") -> None:
    """Publish the run-wallet rows and consume them as `run --wallet` does, so the results carry their spend."""
    async def main():
        client = aioredis.Redis.from_url(url)
        try:
            for transaction_id, amount, timestamp in RUN_WALLET_ROWS:
                transaction = kroger(transaction_id, user, amount, timestamp)
                await client.xadd(keys.transactions, codec.encode_transaction(transaction))
            settings = ConsumerSettings(keys=keys, workers=1, block_ms=100, drain=True, wallet=RUN_WALLET)
            await asyncio.wait_for(ConsumerPool(client, settings).run(), timeout=60)
        finally:
            await client.aclose()

    asyncio.run(main())


def test_card_used_option_fills_its_cap(sync_client, keys):
    publish_card_used_rows(sync_client, keys)

    year = build_report(sync_client, keys, "u-cu", year="2026", today=date(2026, 12, 5), card_used=BCP)
    february = build_report(sync_client, keys, "u-cu", month="2026-02", today=date(2026, 12, 5), card_used=BCP)

    assert year.total.earned == Decimal("400.00")
    assert year.total.best == Decimal("800.00")
    assert february.total.earned == Decimal("100.00")
    assert february.total.best == Decimal("400.00")


def test_card_used_option_matches_file(sync_client, keys):
    publish_card_used_rows(sync_client, keys, card_used=BCP)

    year = build_report(sync_client, keys, "u-cu", year="2026", today=date(2026, 12, 5))
    february = build_report(sync_client, keys, "u-cu", month="2026-02", today=date(2026, 12, 5))

    assert year.total.earned == Decimal("400.00")
    assert february.total.earned == Decimal("100.00")


def test_run_wallet_judges_as_the_run(redis_url, sync_client, keys):
    consume_with_run_wallet(redis_url, keys)
    results = list(read_results(sync_client, keys.results(), user="u-nw"))

    report = build_report(sync_client, keys, "u-nw", year="2026", today=date(2026, 12, 5), wallet=RUN_WALLET)

    assert {result.wallet_source for result in results} == {"run"}
    assert sum(result.rewards.cash_value_usd for result in results) == Decimal("368.00")
    assert report.wallet_source == "run"
    assert report.wallet == RUN_WALLET
    assert report.total.best == Decimal("368.00")
    assert set(report.by_card_recommended) == set(RUN_WALLET)


def test_run_wallet_missing_counts_results(redis_url, sync_client, keys):
    consume_with_run_wallet(redis_url, keys)

    report = build_report(sync_client, keys, "u-nw", year="2026", today=date(2026, 12, 5))
    data = report.to_json()

    assert report.total.best == Decimal("536.00")
    assert data["wallet"]["source"] == "catalog"
    assert data["wallet"]["cards"] is None
    assert data["wallet"]["run_wallet_results"] == 4
    assert sorted(data["wallet"]["run_wallet_cards_seen"]) == sorted(RUN_WALLET)


def test_stored_wallet_comes_first(sync_client, keys):
    publish_card_used_rows(sync_client, keys)

    report = build_report(sync_client, keys, "u-cu", year="2026", today=date(2026, 12, 5), wallet=RUN_WALLET)

    assert report.wallet_source == "user"
    assert report.wallet == ["amex-gold", BCP]
    assert report.total.best == Decimal("800.00")


@one_server
def test_report_cli_wallet_option(sync_client, keys, cli_env, tmp_path):
    rows = tmp_path / "t11.jsonl"
    rows.write_text("".join(
        json.dumps({"transaction_id": transaction_id, "user_id": "u-nw", "merchant": "Kroger",
                    "amount_usd": amount, "mcc": "5411", "timestamp": timestamp}) + "\n"
        for transaction_id, amount, timestamp in RUN_WALLET_ROWS
    ))
    base = ["--prefix", keys.prefix]
    report = [*base, "report", "--job", "t11", "--user", "u-nw", "--year", "2026"]

    ran = invoke_cli([*base, "run", str(rows), "--job", "t11", "--wallet", ",".join(RUN_WALLET)], cli_env)
    with_wallet = invoke_cli([*report, "--wallet", RUN_WALLET[0], "--wallet", RUN_WALLET[1], "--json"], cli_env)
    stored = invoke_cli([*report, "--json"], cli_env)
    stored_text = invoke_cli(report, {**cli_env, "COLUMNS": "200"})
    misspelled = invoke_cli([*report, "--wallet", "amex-blue-cash-prefered"], cli_env)
    wallet_ttl = sync_client.ttl(run_wallet_key(StreamKeys(prefix=keys.prefix, job="t11")))

    # A later run of the job id without --wallet removes the record: its consumers use the whole catalog.
    rerun = invoke_cli([*base, "run", str(rows), "--job", "t11"], cli_env)
    missing = invoke_cli([*report, "--json"], cli_env)
    text = invoke_cli(report, {**cli_env, "COLUMNS": "200"})

    assert ran.returncode == 0, ran.stderr[-2000:]
    assert with_wallet.returncode == 0, with_wallet.stderr[-2000:]
    assert json.loads(with_wallet.stdout)["total"]["best"] == "368.00"
    assert json.loads(with_wallet.stdout)["wallet"]["source"] == "run"
    assert "warning" not in with_wallet.stderr
    assert stored.returncode == 0, stored.stderr[-2000:]
    assert json.loads(stored.stdout)["total"]["best"] == "368.00"
    assert json.loads(stored.stdout)["wallet"] == json.loads(with_wallet.stdout)["wallet"]
    assert "warning" not in stored.stderr
    assert f"judged against the wallet that `run --wallet` stored with job 't11': {', '.join(RUN_WALLET)}" in (
        stored.stderr)
    assert "Judged against the run's wallet" in stored_text.stdout
    assert 0 < wallet_ttl <= 30 * 24 * 3600  # expires with the job (run's default --keep, 30d)
    assert misspelled.returncode == 2
    assert "unknown card 'amex-blue-cash-prefered'" in misspelled.stderr

    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads(missing.stdout)["wallet"]["source"] == "catalog"
    assert "4 result(s) of job 't11' in 2026 were judged against the wallet given to `run --wallet`" in missing.stderr
    assert "Pass the same cards with --wallet" in missing.stderr
    assert "Judged against the whole catalog" in text.stdout


@one_server
def test_stored_run_wallet_ignores_bad_records(sync_client, keys):
    job = StreamKeys(prefix=keys.prefix, job="t12")
    record_run_wallet(sync_client, job, RUN_WALLET, 60)
    assert stored_run_wallet(sync_client, job) == RUN_WALLET
    assert 0 < sync_client.ttl(run_wallet_key(job)) <= 60
    assert stored_run_wallet(sync_client, StreamKeys(prefix=keys.prefix)) is None  # the live streams keep none

    for written in ("not json", "[]", '{"cards": 1}', '["amex-gold", 3]'):
        sync_client.set(run_wallet_key(job), written)
        assert stored_run_wallet(sync_client, job) is None, written

    record_run_wallet(sync_client, job, None, 60)
    assert not sync_client.exists(run_wallet_key(job))


def test_caps_period_by_eastern_date(sync_client, keys):
    sync_client.hset(keys.cap_spend("u-bcp"), mapping={BCP_2026: 660_000, BCP_2027: 5_000})

    # 23:00 Eastern on December 31, 2026 is 04:00 UTC on January 1, 2027.
    new_years_eve = cap_status(sync_client, keys, "u-bcp", ENGINE, now=datetime(2027, 1, 1, 4, tzinfo=timezone.utc))
    new_year = cap_status(sync_client, keys, "u-bcp", ENGINE, now=datetime(2027, 1, 1, 5, 30, tzinfo=timezone.utc))

    assert [cap.period for cap in new_years_eve] == ["2026"]
    assert new_years_eve[0].remaining_usd == Decimal("0")
    assert new_years_eve[0].today == date(2026, 12, 31)
    assert new_years_eve[0].time_zone == "America/New_York"
    assert [cap.period for cap in new_year] == ["2027"]
    assert new_year[0].today == date(2027, 1, 1)


def test_report_names_caps_date(sync_client, keys):
    publish_card_used_rows(sync_client, keys)
    sync_client.hset(keys.cap_spend("u-cu"), BCP_2026, 100_000)

    report = build_report(sync_client, keys, "u-cu", year="2026", now=datetime(2027, 1, 1, 4, tzinfo=timezone.utc))
    data = report.to_json()

    assert data["caps_today"] == "2026-12-31"
    assert data["caps_time_zone"] == "America/New_York"
    assert [cap["period"] for cap in data["caps"]] == ["2026"]
    assert data["caps"][0]["today"] == "2026-12-31"
    assert "today is 2026-12-31 in America/New_York" in report.caps_date_text()
    assert "today is 2026-12-31 in America/New_York" in render_html(report)


def test_used_up_cap_shows_fill_date(redis_url, sync_client, keys):
    consume_with_run_wallet(redis_url, keys)

    statuses = cap_status(sync_client, keys, "u-nw", ENGINE, now=datetime(2026, 12, 5, 17, tzinfo=timezone.utc))
    data = build_report(sync_client, keys, "u-nw", year="2026", wallet=RUN_WALLET,
                        now=datetime(2026, 12, 5, 17, tzinfo=timezone.utc)).to_json()["caps"]

    assert [(cap.card_id, cap.period, cap.spent_usd) for cap in statuses] == [(BCP, "2026", Decimal("6600"))]
    assert statuses[0].used_up
    assert statuses[0].used_up_on == date(2026, 3, 2)
    assert statuses[0].runs_out_on is None
    assert statuses[0].run_out_text() == "used up on 2026-03-02"
    assert data[0]["used_up"] is True
    assert data[0]["used_up_on"] == "2026-03-02"
    assert data[0]["runs_out_on"] is None


def test_used_up_cap_without_results(sync_client, keys):
    # The hash has spend that no result accounts for (its results were trimmed, say).
    sync_client.hset(keys.cap_spend("u-bcp"), BCP_2026, 660_000)

    statuses = cap_status(sync_client, keys, "u-bcp", ENGINE, today=date(2026, 12, 5))

    assert statuses[0].used_up
    assert statuses[0].used_up_on is None
    assert statuses[0].runs_out_on is None
    assert statuses[0].run_out_text() == "used up"


def test_invalid_stored_mode_left_out(sync_client, keys, cli_env):
    """A stored mode the engine rejects is left out with a warning, as the consumers leave it out."""
    cards = ["amex-gold", BCP]
    sync_client.set(keys.wallet("u-md"), wallets.encode_wallet(cards, mode="program:Chase Ultimate Rewards (cash back)"))
    sync_client.sadd(keys.wallet_index, "u-md")
    add_with_result(sync_client, keys, kroger("t13-1", "u-md", "100.00", "2026-01-10T15:00:00Z"), cards, ENGINE)

    report = build_report(sync_client, keys, "u-md", year="2026", today=date(2026, 12, 5))
    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "u-md", "--year", "2026", "--json"], cli_env)

    assert report.dropped_mode is not None
    assert "Chase Ultimate Rewards (cash back)" in report.dropped_mode
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "stored mode of u-md is left out" in " ".join(completed.stderr.split())


@one_server
def test_report_follows_settle_order(sync_client, keys, cli_env, tmp_path):
    """Rows published out of date order: the report applies caps in the order the consumers did, and warns."""
    rows = tmp_path / "order.csv"
    rows.write_text(
        "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
        "o1,ord,Shell,gas,100.00,5541,2026-03-20T15:00:00Z\n"
        "o2,ord,Olive Garden,dining,400.00,5812,2026-03-05T15:00:00Z\n"
        "o3,ord,Corner Shop,other,10.00,5999,2026-03-25T15:00:00Z\n"
    )
    base = ["--prefix", keys.prefix]
    wallet = invoke_cli([*base, "wallet", "set", "ord", "citi-custom-cash", "citi-double-cash"], cli_env)
    ran = invoke_cli([*base, "run", str(rows), "--job", "ord1", "--json"], cli_env)
    report = invoke_cli([*base, "report", "--job", "ord1", "--user", "ord", "--month", "2026-03", "--json"], cli_env)

    assert wallet.returncode == 0, wallet.stderr[-2000:]
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert report.returncode == 0, report.stderr[-2000:]
    # Custom Cash: gas is the top category at o1 ($5.00), then dining overtakes it at o2 (5% on $300
    # and 1% on $100 = $16.00). o3 earns 2% with Double Cash ($0.20).
    assert json.loads(ran.stdout)["total_rewards"] == "21.20"
    data = json.loads(report.stdout)
    assert data["total"]["best"] == "21.20"
    assert data["out_of_order"] == 1
    assert "1 of ord's purchases were processed after a purchase dated later" in " ".join(report.stderr.split())
