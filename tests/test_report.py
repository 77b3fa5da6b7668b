"""The missed-rewards report over a small run, worked by hand.

Wallet: Amex Gold (4x at U.S. supermarkets and restaurants, 1x else, points at
2.0 cents; https://www.americanexpress.com/us/credit-cards/card/gold-card/) and
Citi Double Cash (2 points per dollar at 1.0 cent;
https://www.citi.com/credit-cards/citi-double-cash-credit-card).

November 2026 (Eastern Time):
* t1 $100.00 Kroger, paid with Double Cash: earned 200 x 1.0 = $2.00; Gold 400 x 2.0 = $8.00.
* t2 $50.00 restaurant, paid with Gold: 200 x 2.0 = $4.00, the best.
* t3 $40.00 gas, paid with Gold: 40 x 2.0 = $0.80; Double Cash 80 x 1.0 = $0.80 (tie).
* t4 $25.00 Kroger, card unknown: counts as the best, Gold 100 x 2.0 = $2.00.
* t5 $1,000.00 at 22:00 EDT October 31 (02:00 UTC November 1) is October's.
Totals: spend $215.00; earned $8.80; best $14.80; missed $6.00, all in groceries
($125.00 spend, $4.00 earned, $10.00 best).
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest

from conftest import invoke_cli, one_server
from rewardpilot import codec, wallets
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction
from rewardpilot.report import build_report, cap_status, parse_period, period_bounds
from rewardpilot.report_charts import render_html, render_svg

ENGINE = RulesEngine.default()
WALLET = ["amex-gold", "citi-double-cash"]

ROWS = [
    dict(transaction_id="t1", merchant="KROGER #512", amount_usd="100.00", mcc="5411",
         timestamp="2026-11-03T15:00:00Z", card_used="citi-double-cash"),
    dict(transaction_id="t2", merchant="OLIVE GARDEN #88", amount_usd="50.00", mcc="5812",
         timestamp="2026-11-04T23:00:00Z", card_used="amex-gold"),
    dict(transaction_id="t3", merchant="SHELL OIL 5744", amount_usd="40.00", mcc="5541",
         timestamp="2026-11-10T13:00:00Z", card_used="Amex Gold"),
    dict(transaction_id="t4", merchant="KROGER #512", amount_usd="25.00", mcc="5411",
         timestamp="2026-11-12T13:00:00Z"),
    dict(transaction_id="t5", merchant="KROGER #512", amount_usd="1000.00", mcc="5411",
         timestamp="2026-11-01T02:00:00Z", card_used="citi-double-cash"),
    dict(transaction_id="t6", user_id="u2", merchant="KROGER #512", amount_usd="70.00", mcc="5411",
         timestamp="2026-11-05T13:00:00Z", card_used="citi-double-cash"),
]


def publish_run(client, keys) -> None:
    """Put the rows on the transactions stream and their recommendations on the results stream."""
    wallets.set_wallet(client, keys, "u1", WALLET, ENGINE.catalog)
    for row in ROWS:
        transaction = Transaction(**{"user_id": "u1", **row})
        entry_id = client.xadd(keys.transactions, codec.encode_transaction(transaction))
        rec = ENGINE.recommend(transaction, WALLET)
        rec.entry_id = entry_id
        client.xadd(keys.results(), codec.encode_result(rec))


def test_month_totals(sync_client, keys):
    publish_run(sync_client, keys)
    report = build_report(sync_client, keys, "u1", month="2026-11", today=date(2026, 11, 30))
    assert report.purchases == 4
    assert report.unknown_card_used == 1
    assert report.total.spend == Decimal("215.00")
    assert report.total.earned == Decimal("8.80")
    assert report.total.best == Decimal("14.80")
    assert report.total.missed == Decimal("6.00")
    groceries = report.by_category["groceries"]
    assert (groceries.spend, groceries.earned, groceries.best) == (Decimal("125.00"), Decimal("4.00"), Decimal("10.00"))
    assert report.by_category["dining"].missed == Decimal("0.00")
    assert report.by_card_used["citi-double-cash"].missed == Decimal("6.00")
    assert report.by_card_used["amex-gold"].purchases == 2
    assert report.by_card_used["(unknown)"].purchases == 1


def test_card_used_fills_unknown_card(sync_client, keys):
    # t4 names no card; with --card-used citi-double-cash it earned 50 x 1.0 = $0.50 against
    # Gold's $2.00, so $1.50 more is missed than in test_month_totals ($6.00 + $1.50).
    publish_run(sync_client, keys)
    report = build_report(sync_client, keys, "u1", month="2026-11", today=date(2026, 11, 30),
                          card_used="citi-double-cash")

    assert report.unknown_card_used == 0
    assert report.total.missed == Decimal("7.50")
    assert "(unknown)" not in report.by_card_used


def test_card_used_unknown_id_rejected(sync_client, keys):
    publish_run(sync_client, keys)
    with pytest.raises(KeyError, match="citi-double-cassh"):
        build_report(sync_client, keys, "u1", month="2026-11", card_used="citi-double-cassh")


def test_year_includes_october(sync_client, keys):
    # Adding t5: Double Cash 2,000 x 1.0 = $20.00 against Gold 4,000 x 2.0 = $80.00: $60.00 more missed.
    publish_run(sync_client, keys)
    report = build_report(sync_client, keys, "u1", year="2026", today=date(2026, 11, 30))
    assert report.purchases == 5
    assert report.total.missed == Decimal("66.00")


def test_month_without_purchases(sync_client, keys):
    publish_run(sync_client, keys)
    report = build_report(sync_client, keys, "u1", month="2026-09", today=date(2026, 11, 30))
    assert report.purchases == 0
    assert report.total.missed == Decimal("0")
    assert "Missed rewards for u1, 2026-09" in render_html(report)


def test_cap_status_and_run_out_forecast(sync_client, keys):
    wallets.set_wallet(sync_client, keys, "u1", WALLET, ENGINE.catalog)
    sync_client.hset(keys.cap_spend("u1"), mapping={
        "amex-gold|us-supermarkets|2026": 1_000_000,          # $10,000 of $25,000 by June 30
        "amex-blue-cash-preferred|us-supermarkets|2026": 550_000,  # $5,500 of $6,000
        "amex-gold|us-supermarkets|2025": 2_500_000,          # last year: not shown
        "citi-custom-cash|top:gas|2026-06": 45_000,           # $450 of $500 in June
    })
    statuses = {(s.card_id, s.tally): s for s in cap_status(sync_client, keys, "u1", ENGINE, today=date(2026, 6, 30))}
    assert set(statuses) == {("amex-gold", "us-supermarkets"), ("amex-blue-cash-preferred", "us-supermarkets"),
                             ("citi-custom-cash", "top:gas")}
    # BCP: $5,500 over 181 days = $30.39 a day; $500 left lasts 16 days: July 16.
    bcp = statuses[("amex-blue-cash-preferred", "us-supermarkets")]
    assert bcp.remaining_usd == Decimal("500")
    assert bcp.runs_out_on == date(2026, 7, 16)
    # Gold: $55.25 a day; $15,000 left lasts 271 days, past December 31.
    assert statuses[("amex-gold", "us-supermarkets")].runs_out_on is None
    # Custom Cash: $15 a day in June; $50 left would run out July 3, after the cycle ends.
    custom = statuses[("citi-custom-cash", "top:gas")]
    assert custom.cap_usd == Decimal("500")
    assert custom.runs_out_on is None


def test_period_bounds():
    assert period_bounds("2026") == (date(2026, 1, 1), date(2026, 12, 31))
    assert period_bounds("2026Q1") == (date(2026, 1, 1), date(2026, 3, 31))
    assert period_bounds("2026Q4") == (date(2026, 10, 1), date(2026, 12, 31))
    assert period_bounds("2026-02") == (date(2026, 2, 1), date(2026, 2, 28))
    assert period_bounds("cycle:2026-11-15") == (date(2026, 11, 15), date(2026, 12, 14))
    assert period_bounds("cycle:2026-12-15") == (date(2026, 12, 15), date(2027, 1, 14))


@pytest.mark.parametrize("month, year, expected", [
    (None, None, "exactly one of"),
    ("2026-11", "2026", "exactly one of"),
    ("2026-13", None, "write it like 2026-11"),
    ("Nov 2026", None, "write it like 2026-11"),
    (None, "26", "write it like 2026"),
])
def test_bad_period_rejected(month, year, expected):
    with pytest.raises(ValueError) as caught:
        parse_period(month, year)
    assert expected in str(caught.value)


def test_svg_chart_is_self_contained(sync_client, keys):
    publish_run(sync_client, keys)
    report = build_report(sync_client, keys, "u1", month="2026-11", today=date(2026, 11, 30))
    svg = render_svg(report)
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert ">groceries<" in svg
    assert "$10.00" in svg
    assert "$4.00" in svg
    page = render_html(report)
    assert "$6.00" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page


@one_server
def test_cli_run_then_report(cli_env, tmp_path):
    source = tmp_path / "november.jsonl"
    source.write_text("".join(json.dumps({"user_id": "u1", **row}) + "\n" for row in ROWS[:5]), encoding="utf-8")
    prefix = f"rpreport{tmp_path.name[-8:]}:"
    assert invoke_cli(["--prefix", prefix, "wallet", "set", "u1", *WALLET], cli_env).returncode == 0
    done = invoke_cli(["--prefix", prefix, "run", str(source), "--job", "nov"], cli_env)
    assert done.returncode == 0, done.stderr

    html_file, png_file = tmp_path / "report.html", tmp_path / "report.png"
    shown = invoke_cli(["--prefix", prefix, "report", "--job", "nov", "--user", "u1", "--month", "2026-11",
                        "--json", "--html", str(html_file), "--png", str(png_file)], cli_env)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["total"] == {"spend": "215.00", "earned": "8.80", "best": "14.80", "missed": "6.00", "purchases": 4}
    assert "<svg" in html_file.read_text(encoding="utf-8")
    assert png_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = invoke_cli(["--prefix", prefix, "report", "--job", "nov", "--user", "u1", "--month", "2026-11"], cli_env)
    assert table.returncode == 0, table.stderr
    assert "$6.00 missed" in table.stdout
    assert "judged again with the wallet named above and the mode and valuations stored now" in " ".join(table.stdout.split())

    bad = invoke_cli(["--prefix", prefix, "report", "--user", "u1", "--month", "11/2026"], cli_env)
    assert bad.returncode == 2
    assert "write it like 2026-11" in bad.stderr + bad.stdout


@one_server
def test_cli_report_headline_totals(cli_env, keys, sync_client):
    publish_run(sync_client, keys)

    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "u1", "--month", "2026-11"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.splitlines()[0] == (
        "Report for u1, 2026-11: 4 purchase(s), $215.00 spent; earned $8.80, "
        "the recommended cards would have earned $14.80: $6.00 missed"
    )


# The ids are printed as given: no change of case, and brackets are text, not Rich markup.
@one_server
@pytest.mark.parametrize("user", ["user-1001", "nobody", "User-1001", "[red]x[/red]", "a[/bold]b"])
def test_cli_report_headline_user_id(cli_env, keys, user):
    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", user, "--month", "2026-11"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    headline = completed.stdout.splitlines()[0]
    assert headline.startswith(f"Report for {user}, 2026-11: 0 purchase(s), ")
    assert headline.endswith(": $0.00 missed")  # one line, whatever the length of the id


@one_server
def test_cli_wallet_activate_and_valuations(cli_env, tmp_path):
    prefix = f"rpcli{tmp_path.name[-8:]}:"
    assert invoke_cli(["--prefix", prefix, "wallet", "set", "u1", "cff", "--cycle-day", "15",
                       "--mode", "cashback"], cli_env).returncode == 0
    done = invoke_cli(["--prefix", prefix, "wallet", "activate", "u1", "cff", "2025Q3"], cli_env)
    assert done.returncode == 0, done.stderr
    bad = invoke_cli(["--prefix", prefix, "wallet", "set", "u1", "cff", "--cycle-day", "31"], cli_env)
    assert bad.returncode == 2
    assert "1 to 28" in bad.stderr + bad.stdout
    bad_mode = invoke_cli(["--prefix", prefix, "wallet", "set", "u1", "cff", "--mode", "points"], cli_env)
    assert bad_mode.returncode == 2

    assert invoke_cli(["--prefix", prefix, "valuations", "set", "u1", "Amex Membership Rewards", "1.4"],
                      cli_env).returncode == 0
    shown = invoke_cli(["--prefix", prefix, "valuations", "show", "u1", "--json"], cli_env)
    values = json.loads(shown.stdout)
    assert values["Amex Membership Rewards"] == {"cents_per_point": "1.4", "source": "user"}
    assert values["Chase Ultimate Rewards"]["source"] == "default"
    refused = invoke_cli(["--prefix", prefix, "valuations", "set", "u1", "Bogus", "1"], cli_env)
    assert refused.returncode == 2
    assert "known programs" in refused.stderr + refused.stdout


def test_month_starts_with_earlier_cap_spend(sync_client, keys):
    """A yearly cap used up in October stays used up in a November report, as in the live results.

    Blue Cash Preferred earns 6% at U.S. supermarkets on up to $6,000 a calendar year, then 1%
    (https://www.americanexpress.com/us/credit-cards/card/blue-cash-preferred/). October's $6,000
    fills the cap, so November's $100.00 earns 1%: $1.00, not $6.00. December of the year before
    is a different cap year and adds nothing.
    """
    wallet = ["amex-blue-cash-preferred"]
    wallets.set_wallet(sync_client, keys, "u3", wallet, ENGINE.catalog)
    rows = [
        ("old", "2025-12-10T15:00:00Z", "3000.00"),
        ("fill", "2026-10-05T15:00:00Z", "6000.00"),
        ("nov", "2026-11-05T15:00:00Z", "100.00"),
    ]
    for transaction_id, timestamp, amount in rows:
        transaction = Transaction(transaction_id=transaction_id, user_id="u3", merchant="KROGER #512", mcc="5411",
                                  amount_usd=amount, timestamp=timestamp, card_used="amex-blue-cash-preferred")
        entry_id = sync_client.xadd(keys.transactions, codec.encode_transaction(transaction))
        rec = ENGINE.recommend(transaction, wallet)
        rec.entry_id = entry_id
        sync_client.xadd(keys.results(), codec.encode_result(rec))

    report = build_report(sync_client, keys, "u3", month="2026-11", today=date(2026, 11, 30))

    assert report.purchases == 1
    assert report.total.spend == Decimal("100.00")
    assert report.total.earned == Decimal("1.00")
    assert report.total.best == Decimal("1.00")
