"""The engine's Evaluation serializes to the same result as the Recommendation model it builds.

The consumer writes ``Evaluation.to_json`` to the results stream and never
builds the model, so every field a subscriber reads must come out the same
either way: same keys, same order, same values.
"""

from __future__ import annotations

import csv
import json
import random
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from rewardpilot.engine import RulesEngine
from rewardpilot.engine.evaluation import Evaluation
from rewardpilot.engine.state import SpendState
from rewardpilot.models import Recommendation, Transaction

ROOT = Path(__file__).resolve().parent.parent
ENGINE = RulesEngine.default()
WALLETS = [
    None,
    ["amex-gold", "amex-blue-cash-preferred", "citi-double-cash"],
    ["chase-freedom-flex", "chase-sapphire-preferred", "citi-custom-cash"],
    ["discover-it-cash-back", "capital-one-savor", "chase-freedom-unlimited", "amex-gold"],
    ["amex-gold", "capital-one-savor"],  # no Visa: Costco falls back to the catalog
]


def example_transactions(limit: int = 600) -> list[Transaction]:
    with (ROOT / "examples" / "transactions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:limit]
    return [Transaction(**{name: value or None for name, value in row.items()}) for row in rows]


def same_document(evaluation: Evaluation) -> None:
    model = evaluation.to_model()
    fast = evaluation.to_json()
    slow = model.model_dump_json()

    assert json.loads(fast) == json.loads(slow)
    assert list(json.loads(fast)) == list(json.loads(slow))
    assert Recommendation.model_validate_json(fast) == model


def stamp(evaluation: Evaluation, index: int) -> None:
    evaluation.entry_id = f"1764800000000-{index}"
    evaluation.run = "replay-1"
    evaluation.recommender = "in-process"
    evaluation.published_at = datetime(2026, 12, 4, 1, 2, 3, 4000, tzinfo=timezone.utc)
    evaluation.completed_at = datetime(2026, 12, 4, 1, 2, 3, 9000, tzinfo=timezone.utc)


@pytest.mark.parametrize("wallet_index", range(len(WALLETS)))
def test_example_rows_serialize_alike(wallet_index):
    wallet = WALLETS[wallet_index]
    source = None if wallet is None else "user"
    for index, transaction in enumerate(example_transactions()):
        evaluation = ENGINE.evaluate_or_fallback(transaction, wallet, wallet_source=source)
        if index % 2:
            stamp(evaluation, index)
        same_document(evaluation)


def test_spend_state_results_serialize_alike():
    """Caps crossed mid-purchase put notes in the alternatives and spend updates in the result."""
    state = SpendState()
    state.set_terms("u1", activations={"chase-freedom-flex": ["2026Q4"]}, cycle_day=15)
    wallet = ["amex-blue-cash-preferred", "chase-freedom-flex", "citi-custom-cash", "citi-double-cash"]
    seen_updates = seen_notes = 0
    for index, transaction in enumerate(example_transactions(400)):
        transaction = transaction.model_copy(update={"user_id": "u1", "amount_usd": transaction.amount_usd * 20})
        evaluation = ENGINE.evaluate_or_fallback(transaction, wallet, wallet_source="user", state=state)
        seen_updates += bool(evaluation.spend_updates)
        seen_notes += any("cap" in listed.note for listed in evaluation.cards[1:])
        stamp(evaluation, index)
        same_document(evaluation)

    assert seen_updates > 0
    assert seen_notes > 0


def test_foreign_fallback_and_odd_text_serialize_alike():
    rng = random.Random(7)
    cases = [
        Transaction(transaction_id="f1", user_id="u2", merchant="Café \"Zürich\" \\ 東京", amount_usd="42.10",
                    mcc="5812", currency="EUR", merchant_country="DE", card_used="amex-gold"),
        Transaction(transaction_id="c1", user_id="u2", merchant="Costco Wholesale", amount_usd="310.55",
                    mcc="5300", merchant_country="US"),
        Transaction(transaction_id="w1", user_id="u2", merchant="Lucky Casino", amount_usd="100.00", mcc="7995"),
        Transaction(transaction_id="t1", user_id="u2", merchant="Corner shop", category="groceries",
                    amount_usd="0.01", mcc=None),
    ]
    for transaction in cases:
        for wallet in WALLETS:
            for mode in (None, "cashback", "program:Chase Ultimate Rewards"):
                evaluation = ENGINE.evaluate_or_fallback(
                    transaction, wallet, wallet_source=None if wallet is None else "user", mode=mode,
                    valuations={"Chase Ultimate Rewards": str(rng.choice(["1.0", "1.5", "2.05"]))},
                )
                same_document(evaluation)


def test_recommend_is_evaluate_as_a_model():
    transaction = example_transactions(1)[0]
    recommendation = ENGINE.recommend(transaction, ["amex-gold", "citi-double-cash"])
    evaluation = ENGINE.evaluate(transaction, ["amex-gold", "citi-double-cash"])

    assert isinstance(recommendation, Recommendation)
    assert recommendation.model_dump(exclude={"processing_time_ms"}) == \
        evaluation.to_model().model_dump(exclude={"processing_time_ms"})
    assert recommendation.cash_value_usd == evaluation.cash_value_usd
    assert isinstance(evaluation.cash_value_usd, Decimal)


@pytest.mark.parametrize("wallet_index", range(len(WALLETS)))
def test_uncapped_path_matches_general(wallet_index, monkeypatch):
    """Listing straight from the ranking gives what valuing every card under its caps gives."""
    wallet = WALLETS[wallet_index]
    source = None if wallet is None else "user"
    transactions = example_transactions()
    # Amounts that are tiny, odd and large enough to pass some caps.
    transactions += [tx.model_copy(update={"amount_usd": amount}) for tx, amount in
                     zip(transactions[:60], [Decimal("0.01"), Decimal("0.05"), Decimal("1234.57"), Decimal("9999.99")] * 15)]

    def documents():
        found = []
        for transaction in transactions:
            document = json.loads(ENGINE.evaluate_or_fallback(transaction, wallet, wallet_source=source).to_json())
            document.pop("processing_time_ms")
            found.append(document)
        return found

    fast = documents()
    monkeypatch.setattr("rewardpilot.engine.rules._uncapped", lambda ranking, amount, user: False)
    general = documents()

    assert len(fast) == len(transactions)
    for index, (one, other) in enumerate(zip(fast, general)):
        assert one == other, transactions[index]
