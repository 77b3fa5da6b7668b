"""bench.canned: the benchmark's recommender that copies one engine result per category text and MCC."""

from __future__ import annotations

from decimal import Decimal

from bench.canned import CannedRecommender
from consumer.recommenders.base import WorkItem
from rewardpilot.engine.state import SpendState
from rewardpilot.models import Transaction

WALLET = ("citi-double-cash", "chase-freedom-flex")


def purchase(transaction_id: str, amount: str, category: str = "groceries", mcc: str = "5411") -> Transaction:
    return Transaction(transaction_id=transaction_id, user_id="u1", merchant="Corner Market",
                       category=category, amount_usd=amount, mcc=mcc, timestamp="2026-11-02T15:00:00Z")


def item(transaction: Transaction, state: SpendState | None = None) -> WorkItem:
    return WorkItem(transaction, WALLET, "user", state=state)


async def test_same_kind_copied():
    recommender = CannedRecommender()
    first, second = purchase("t1", "10.00"), purchase("t2", "500.00")

    results = await recommender.recommend([item(first), item(second)])

    assert results[0].transaction is first
    assert results[1].transaction is second
    assert results[1] is not results[0]
    # The copy keeps the first result's figures: that is what makes it canned.
    assert results[1].cards[0].cash == results[0].cards[0].cash == Decimal("0.20")
    assert results[1].reasoning == results[0].reasoning


async def test_new_category_runs_engine():
    recommender = CannedRecommender()
    groceries, fuel = purchase("t1", "10.00"), purchase("t2", "10.00", category="gas", mcc="5541")

    results = await recommender.recommend([item(groceries), item(fuel)])

    assert results[0].category == "groceries"
    assert results[1].category == "gas"


async def test_spend_state_runs_engine():
    recommender = CannedRecommender()
    state = SpendState()
    small, large = purchase("t1", "10.00"), purchase("t2", "500.00")

    results = await recommender.recommend([item(small, state), item(large, state)])

    assert results[0].cards[0].cash != results[1].cards[0].cash
    assert results[1].transaction is large
