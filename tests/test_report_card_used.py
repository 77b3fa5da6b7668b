"""report --card-used at a merchant that does not take the card: the card used still earned, so nothing is missed.

Wallet: the demo-foodie cards (Amex Gold, Capital One Savor, Citi Double
Cash, Chase Freedom Unlimited). Costco's U.S. warehouses take Visa only
(merchant rule costco-us-warehouses in cards.json), so at Costco the engine
recommends the one Visa card, Freedom Unlimited: 1.5% of $100.00 = $1.50.

November 2026, every purchase paid with Citi Double Cash (a Mastercard,
2 points per dollar at 1.0 cent):
* c1 $100.00 COSTCO WHSE, MCC 5300: earned $2.00. The recommended card would
  have earned $1.50, so the best is $2.00 and nothing is missed (before the
  fix: missed -$0.50).
* k1 $100.00 KROGER, MCC 5411: earned $2.00; Amex Gold 4 x 100 points at
  2.0 cents = $8.00, so $6.00 missed.
Totals: spend $200.00, earned $4.00, best $10.00, missed $6.00.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

from conftest import invoke_cli, one_server
from rewardpilot import codec, wallets
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction
from rewardpilot.report import build_report
from rewardpilot.report_charts import render_html

ENGINE = RulesEngine.default()
USER = "demo-foodie"
ROWS = [
    dict(transaction_id="c1", merchant="COSTCO WHSE #1234", amount_usd="100.00", mcc="5300",
         timestamp="2026-11-03T15:00:00Z"),
    dict(transaction_id="k1", merchant="KROGER #512", amount_usd="100.00", mcc="5411",
         timestamp="2026-11-04T15:00:00Z"),
]


def publish_purchases(client, keys) -> None:
    """Store the demo-foodie wallet and put the rows and their recommendations on the streams."""
    cards = list(wallets.DEMO_WALLETS[USER])
    wallets.set_wallet(client, keys, USER, cards, ENGINE.catalog)
    for row in ROWS:
        transaction = Transaction(user_id=USER, **row)
        entry_id = client.xadd(keys.transactions, codec.encode_transaction(transaction))
        recommendation = ENGINE.recommend(transaction, cards)
        recommendation.entry_id = entry_id
        client.xadd(keys.results(), codec.encode_result(recommendation))


def november(client, keys):
    return build_report(client, keys, USER, month="2026-11", today=date(2026, 11, 30),
                        card_used="citi-double-cash")


def test_costco_recommendation_is_visa(sync_client, keys):
    publish_purchases(sync_client, keys)

    first_result = codec.decode_result(sync_client.xrange(keys.results(), count=1)[0][1])

    assert first_result.transaction_id == "c1"
    assert first_result.recommended_card.card_id == "chase-freedom-unlimited"
    assert first_result.rewards.cash_value_usd == Decimal("1.50")


def test_card_used_beats_recommended(sync_client, keys):
    publish_purchases(sync_client, keys)

    report = november(sync_client, keys)

    clubs = report.by_category["wholesale_clubs"]
    assert (clubs.earned, clubs.best, clubs.missed) == (Decimal("2.00"), Decimal("2.00"), Decimal("0.00"))
    assert report.total.earned == Decimal("4.00")
    assert report.total.best == Decimal("10.00")
    assert report.total.missed == Decimal("6.00")


def test_missed_never_negative(sync_client, keys):
    publish_purchases(sync_client, keys)

    report = november(sync_client, keys)

    for group in (report.by_category, report.by_card_used, report.by_card_recommended):
        for name, totals in group.items():
            assert totals.missed >= 0, (name, totals)


def test_best_counts_under_card_used(sync_client, keys):
    publish_purchases(sync_client, keys)

    report = november(sync_client, keys)

    assert report.by_card_recommended["citi-double-cash"].purchases == 1
    assert report.by_card_recommended["citi-double-cash"].best == Decimal("2.00")
    assert report.by_card_recommended["amex-gold"].best == Decimal("8.00")
    assert "chase-freedom-unlimited" not in report.by_card_recommended


def test_unknown_card_used_unchanged(sync_client, keys):
    """Without --card-used the purchases name no card and count as earning the recommended amount."""
    publish_purchases(sync_client, keys)

    report = build_report(sync_client, keys, USER, month="2026-11", today=date(2026, 11, 30))

    assert report.unknown_card_used == 2
    assert report.total.best == Decimal("9.50")
    assert report.total.missed == Decimal("0.00")


def test_html_shows_no_negative_missed(sync_client, keys):
    publish_purchases(sync_client, keys)

    page = render_html(november(sync_client, keys))

    assert "$-" not in page
    assert "$6.00" in page


@one_server
def test_cli_card_used_costco(cli_env, keys, sync_client):
    publish_purchases(sync_client, keys)
    command = ["--prefix", keys.prefix, "report", "--user", USER, "--month", "2026-11",
               "--card-used", "citi-double-cash"]

    table = invoke_cli(command, cli_env)
    json_output = invoke_cli([*command, "--json"], cli_env)

    assert table.returncode == 0, table.stderr[-2000:]
    assert table.stdout.splitlines()[0].endswith("earned $4.00, the recommended cards would have earned "
                                                 "$10.00: $6.00 missed")
    assert "-$" not in table.stdout
    assert json_output.returncode == 0, json_output.stderr[-2000:]
    data = json.loads(json_output.stdout)
    assert data["by_category"]["wholesale_clubs"]["missed"] == "0.00"
    assert data["total"]["missed"] == "6.00"
