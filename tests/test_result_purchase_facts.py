"""Results carry the purchase's merchant, time and card used, from every recommender and in every output."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from decimal import Decimal

from conftest import add_with_result
from rewardpilot import wallets
from rewardpilot.cli.output import write_results
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Recommendation, Transaction
from rewardpilot.orchestrator.contract import RecommendResponse
from rewardpilot.report import build_report

ENGINE = RulesEngine.default()
WALLET = ["amex-gold", "citi-double-cash"]


def purchase(**changes) -> Transaction:
    fields = dict(transaction_id="p1", user_id="u1", merchant="KROGER #512", category="groceries",
                  amount_usd="25.00", mcc="5411", timestamp="2026-11-12T13:00:00Z", card_used="amex-gold")
    return Transaction(**{**fields, **changes})


def test_result_json_has_merchant():
    document = json.loads(ENGINE.evaluate(purchase(), WALLET, wallet_source="user").to_json())

    assert document["merchant"] == "KROGER #512"
    assert document["timestamp"] == "2026-11-12T13:00:00Z"
    assert document["card_used"] == "amex-gold"


def test_model_and_json_agree_on_merchant():
    evaluation = ENGINE.evaluate(purchase(merchant='Café "Zoë" & Sons'), WALLET, wallet_source="user")

    assert Recommendation.model_validate_json(evaluation.to_json()).merchant == 'Café "Zoë" & Sons'
    assert evaluation.to_model().merchant == 'Café "Zoë" & Sons'


def test_orchestrator_result_copies_purchase():
    transaction = purchase()
    answer = RecommendResponse.from_evaluation(ENGINE.evaluate(transaction, WALLET, wallet_source="user"))

    result = answer.to_recommendation(transaction, wallet_source="user", recommender="http")

    assert result.merchant == "KROGER #512"
    assert result.timestamp == datetime(2026, 11, 12, 13, tzinfo=timezone.utc)
    assert result.card_used == "amex-gold"


def test_csv_output_ends_with_purchase_facts(tmp_path):
    path = tmp_path / "out.csv"

    write_results([ENGINE.recommend(purchase(), WALLET)], path)

    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    # Columns added later go at the end, so a sheet that reads the earlier ones by position still works.
    assert rows[0][-5:] == ["timestamp", "merchant", "card_used", "published_at", "completed_at"]
    assert rows[1][-5:] == ["2026-11-12T13:00:00Z", "KROGER #512", "amex-gold", "", ""]


def test_older_result_without_merchant_reads():
    document = json.loads(ENGINE.recommend(purchase(), WALLET).model_dump_json())
    del document["merchant"]

    assert Recommendation.model_validate(document).merchant is None


def test_report_uses_result_merchant_when_trimmed(sync_client, keys):
    # Walmart is left out of Amex Gold's supermarket bonus by its merchant name. Once the
    # entry is trimmed, only the result's merchant keeps the report right: without it, the
    # report valued this purchase at 3.20 instead of 0.80.
    wallet = ["citi-double-cash", "amex-gold"]
    wallets.set_wallet(sync_client, keys, "u1", wallet, ENGINE.catalog)
    transaction = purchase(merchant="WALMART SUPERCENTER", amount_usd="40.00", card_used="citi-double-cash")
    entry_id = add_with_result(sync_client, keys, transaction, wallet, ENGINE)
    before = build_report(sync_client, keys, "u1", month="2026-11", engine=ENGINE)

    sync_client.xdel(keys.transactions, entry_id)
    after = build_report(sync_client, keys, "u1", month="2026-11", engine=ENGINE)

    assert before.total.best == Decimal("0.80")
    assert after.total.best == before.total.best
    assert after.purchases == 1
