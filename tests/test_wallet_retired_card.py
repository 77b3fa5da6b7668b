"""Stored wallets that name a card the catalog no longer has, and the checks of set_wallet.

A retired card is written as a stored wallet would be after a catalog
update removed it: with ``encode_wallet``, which does not check ids.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from decimal import Decimal

import httpx
import pytest
import redis.asyncio as aioredis
import structlog

from consumer.build import CallOptions, build_pool
from consumer.pool import ConsumerPool
from consumer.settings import ConsumerSettings
from orchestrator_servers import UvicornThread
from rewardpilot.codec import encode_transaction
from rewardpilot.engine import InvalidModeError, RulesEngine, default_catalog
from rewardpilot.models import Transaction
from rewardpilot.orchestrator import create_app
from rewardpilot.results import read_results
from rewardpilot.wallets import (
    NotACardListError,
    encode_wallet,
    get_wallet_record,
    set_wallet,
    split_known_cards,
)

CATALOG = default_catalog()
RETIRED = "retired-card"
UNKNOWN_CARD_EVENT = "stored wallet names cards the catalog does not have"


def store_raw_wallet(client, keys, user: str, cards: list[str]) -> None:
    client.set(keys.wallet(user), encode_wallet(cards))
    client.sadd(keys.wallet_index, user)


def add_purchase(client, keys, transaction_id: str, user: str) -> None:
    transaction = Transaction(transaction_id=transaction_id, user_id=user, merchant="Shell", category="gas",
                              mcc="5541", amount_usd=Decimal("40.00"),
                              timestamp=datetime(2026, 11, 2, 10, tzinfo=timezone.utc))
    client.xadd(keys.transactions, encode_transaction(transaction))


def drain(url: str, settings: ConsumerSettings):
    async def main():
        client = aioredis.Redis.from_url(url)
        try:
            return await asyncio.wait_for(ConsumerPool(client, settings).run(), timeout=60)
        finally:
            await client.aclose()

    with structlog.testing.capture_logs() as logs:
        stats = asyncio.run(main())
    return stats, logs


def results_by_id(client, keys) -> dict:
    return {result.transaction_id: result for result in read_results(client, keys.results())}


def test_split_known_cards_keeps_order():
    known, unknown = split_known_cards(["citi-double-cash", RETIRED, "csp", "gone-too"], CATALOG)

    assert known == ["citi-double-cash", "csp"]
    assert unknown == [RETIRED, "gone-too"]


def test_pool_skips_retired_card(redis_url, keys, sync_client):
    store_raw_wallet(sync_client, keys, "o-1", [RETIRED, "citi-double-cash"])
    add_purchase(sync_client, keys, "t-1", "o-1")
    add_purchase(sync_client, keys, "t-2", "o-1")

    stats, logs = drain(redis_url, ConsumerSettings(keys=keys, workers=1, block_ms=100, drain=True))

    assert stats.results == 2
    assert stats.dead_letters == 0
    results = results_by_id(sync_client, keys)
    assert results["t-1"].recommended_card.card_id == "citi-double-cash"
    assert results["t-1"].wallet_source == "user"
    warnings = [event for event in logs if event["event"].startswith(UNKNOWN_CARD_EVENT)]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["user_id"] == "o-1"
    assert warnings[0]["unknown_cards"] == [RETIRED]
    assert warnings[0]["cards_left"] == ["citi-double-cash"]
    assert "rewardpilot wallet set" in warnings[0]["event"]


def test_pool_only_retired_uses_run_wallet(redis_url, keys, sync_client):
    store_raw_wallet(sync_client, keys, "o-2", [RETIRED])
    add_purchase(sync_client, keys, "t-3", "o-2")

    settings = ConsumerSettings(keys=keys, workers=1, block_ms=100, drain=True, wallet=["amex-gold"])
    stats, logs = drain(redis_url, settings)

    assert stats.results == 1
    result = results_by_id(sync_client, keys)["t-3"]
    assert result.wallet_source == "run"
    assert result.recommended_card.card_id == "amex-gold"
    assert "every card in the stored wallet is retired from the catalog (retired-card)" in result.reasoning.lower()
    warnings = [event for event in logs if event["event"].startswith(UNKNOWN_CARD_EVENT)]
    assert "as a user without a wallet" in warnings[0]["event"]
    assert warnings[0]["cards_left"] == []


def test_pool_only_retired_uses_catalog(redis_url, keys, sync_client):
    store_raw_wallet(sync_client, keys, "o-3", [RETIRED, "gone-too"])
    add_purchase(sync_client, keys, "t-4", "o-3")

    stats, _ = drain(redis_url, ConsumerSettings(keys=keys, workers=1, block_ms=100, drain=True))

    assert stats.results == 1
    assert stats.dead_letters == 0
    result = results_by_id(sync_client, keys)["t-4"]
    assert result.wallet_source == "catalog"
    assert "No wallet on file" not in result.reasoning
    assert ("Every card in the stored wallet is retired from the catalog (retired-card, gone-too), so this is "
            "the best card in the catalog for this purchase") in result.reasoning


def test_retired_card_warning_rate_limited(redis_url, keys, sync_client):
    for index in range(5):
        store_raw_wallet(sync_client, keys, f"r-{index}", [RETIRED, "citi-double-cash"])
        add_purchase(sync_client, keys, f"t-r{index}", f"r-{index}")

    stats, logs = drain(redis_url, ConsumerSettings(keys=keys, workers=1, block_ms=100, drain=True))

    assert stats.results == 5
    warnings = [event for event in logs if event["event"].startswith(UNKNOWN_CARD_EVENT)]
    assert len(warnings) == 1


def test_orchestrator_skips_retired_card(redis_url, keys, sync_client):
    store_raw_wallet(sync_client, keys, "o-4", [RETIRED, "citi-double-cash"])
    store_raw_wallet(sync_client, keys, "o-5", [RETIRED])
    request = {"transaction_id": "h-1", "merchant": "Shell", "category": "gas", "mcc": "5541", "amount_usd": "40.00"}
    app = create_app(RulesEngine.default(), redis_url=redis_url, prefix=keys.prefix)

    with UvicornThread(app) as running:
        some_left = httpx.post(f"{running.url}/recommend", json={**request, "user_id": "o-4"}, timeout=10)
        none_left = httpx.post(f"{running.url}/recommend", json={**request, "user_id": "o-5"}, timeout=10)

    assert some_left.status_code == 200
    assert some_left.json()["wallet_source"] == "user"
    assert some_left.json()["recommended_card"]["card_id"] == "citi-double-cash"
    assert none_left.status_code == 200
    assert none_left.json()["wallet_source"] == "catalog"
    assert "Every card in the stored wallet is retired from the catalog (retired-card)" in none_left.json()["reasoning"]


def test_orchestrator_forwarded_wallet_skips_retired():
    request = {"transaction_id": "h-2", "user_id": "o-6", "merchant": "Shell", "category": "gas", "mcc": "5541",
               "amount_usd": "40.00"}
    app = create_app(RulesEngine.default())

    with UvicornThread(app) as running:
        forwarded = httpx.post(f"{running.url}/recommend", timeout=10, json={
            **request, "wallet": [RETIRED, "citi-double-cash"], "wallet_source": "user"})
        only_retired = httpx.post(f"{running.url}/recommend", timeout=10, json={
            **request, "wallet": [RETIRED], "wallet_source": "user"})
        named_for_run = httpx.post(f"{running.url}/recommend", timeout=10, json={
            **request, "wallet": [RETIRED, "citi-double-cash"], "wallet_source": "run"})

    assert forwarded.status_code == 200, forwarded.text
    assert forwarded.json()["wallet_source"] == "user"
    assert forwarded.json()["recommended_card"]["card_id"] == "citi-double-cash"
    assert only_retired.status_code == 200, only_retired.text
    assert only_retired.json()["wallet_source"] == "catalog"
    assert named_for_run.status_code == 422
    assert RETIRED in named_for_run.text


def test_http_pool_skips_retired_card(redis_url, keys, sync_client):
    store_raw_wallet(sync_client, keys, "o-7", [RETIRED, "citi-double-cash"])
    add_purchase(sync_client, keys, "t-h1", "o-7")
    settings = ConsumerSettings(keys=keys, workers=1, block_ms=100, drain=True)

    # The orchestrator has no Redis, so it judges the wallet the consumer forwards.
    with UvicornThread(create_app(RulesEngine.default())) as running:
        async def main():
            client = aioredis.Redis.from_url(redis_url)
            pool = build_pool(client, settings, CallOptions(orchestrator_url=running.url, timeout=5.0))
            try:
                return await asyncio.wait_for(pool.run(), timeout=60)
            finally:
                await pool.recommender.aclose()
                await client.aclose()

        stats = asyncio.run(main())

    assert stats.results == 1
    assert stats.dead_letters == 0
    result = results_by_id(sync_client, keys)["t-h1"]
    assert result.recommended_card.card_id == "citi-double-cash"
    assert result.wallet_source == "user"
    assert result.recommender == "http"


def test_orchestrator_run_wallet_ignores_retired_wallet_mode(redis_url, keys, sync_client):
    """A stored wallet of retired cards counts as no wallet, so its mode applies on neither path."""
    sync_client.set(keys.wallet("o-8"), encode_wallet([RETIRED], mode="cashback"))
    sync_client.sadd(keys.wallet_index, "o-8")
    add_purchase(sync_client, keys, "t-m1", "o-8")
    settings = ConsumerSettings(keys=keys, workers=1, block_ms=100, drain=True,
                                wallet=["amex-gold", "chase-sapphire-preferred"])
    stats, _ = drain(redis_url, settings)
    in_process = results_by_id(sync_client, keys)["t-m1"]

    request = {"transaction_id": "t-m1", "user_id": "o-8", "merchant": "Shell", "category": "gas", "mcc": "5541",
               "amount_usd": "40.00", "timestamp": "2026-11-02T10:00:00Z",
               "wallet": ["amex-gold", "chase-sapphire-preferred"], "wallet_source": "run"}
    app = create_app(RulesEngine.default(), redis_url=redis_url, prefix=keys.prefix)
    with UvicornThread(app) as running:
        response = httpx.post(f"{running.url}/recommend", json=request, timeout=10)

    assert stats.results == 1
    assert in_process.wallet_source == "run"
    assert "cash back mode" not in in_process.reasoning
    assert response.status_code == 200, response.text
    assert response.json()["reasoning"] == in_process.reasoning
    assert Decimal(str(response.json()["rewards"]["cash_value"])) == in_process.rewards.cash_value_usd


# set_wallet checks

@pytest.mark.parametrize("cards, fragment", [
    ("amex-gold", "pass a list such as ['amex-gold']"),
    (b"amex-gold", "one string"),
    (42, "not a list"),
    (["amex-gold", 7], "card id at index 1 is 7"),
])
def test_set_wallet_rejects_non_list(sync_client, keys, cards, fragment):
    with pytest.raises(NotACardListError) as raised:
        set_wallet(sync_client, keys, "u-s", cards, CATALOG)

    assert isinstance(raised.value, TypeError)
    assert fragment in str(raised.value)
    assert get_wallet_record(sync_client, keys, "u-s") is None


@pytest.mark.parametrize("mode", ["points", "program:nope", "", "program:Chase Ultimate Rewards (cash back)"])
def test_set_wallet_rejects_invalid_mode(sync_client, keys, mode):
    with pytest.raises(InvalidModeError) as raised:
        set_wallet(sync_client, keys, "u-m", ["amex-gold"], CATALOG, mode=mode)

    assert repr(mode) in str(raised.value)
    assert get_wallet_record(sync_client, keys, "u-m") is None


def test_set_wallet_stores_checked_mode(sync_client, keys):
    program = next(card.program for card in CATALOG.cards if card.card_id == "amex-gold")

    set_wallet(sync_client, keys, "u-m", ["amex-gold"], CATALOG, mode=f"program: {program}")

    assert get_wallet_record(sync_client, keys, "u-m").mode == f"program:{program}"


def test_set_wallet_rejects_valuation_as_program(sync_client, keys):
    # Freedom points on their own are valued as "Chase Ultimate Rewards (cash back)", but the
    # cards earn Chase Ultimate Rewards, which is the program a mode can prefer.
    with pytest.raises(InvalidModeError) as raised:
        set_wallet(sync_client, keys, "u-m", ["amex-gold", "chase-freedom-unlimited"], CATALOG,
                   mode="program:Chase Ultimate Rewards (cash back)")

    assert "so use program:Chase Ultimate Rewards." in str(raised.value)
    assert get_wallet_record(sync_client, keys, "u-m") is None


# --- the reasoning when the caller left retired cards out of the wallet ---------

ENGINE = RulesEngine.default()
KROGER = Transaction(transaction_id="t-k", user_id="u-ret", merchant="Kroger", mcc="5411",
                     amount_usd=Decimal("100.00"), timestamp=datetime(2026, 6, 1, 12, tzinfo=timezone.utc))


def test_reasoning_all_retired_judged_on_catalog():
    rec = ENGINE.recommend(KROGER, None, retired_cards=["chase-sapphire-old"])

    assert rec.wallet_source == "catalog"
    assert "No wallet on file" not in rec.reasoning
    assert ("Every card in the stored wallet is retired from the catalog (chase-sapphire-old), so this is "
            "the best card in the catalog for this purchase; update the wallet with "
            "`rewardpilot wallet set USER CARD...`.") in rec.reasoning


def test_reasoning_all_retired_judged_on_run_wallet():
    rec = ENGINE.recommend(KROGER, ["citi-double-cash"], wallet_source="run",
                           retired_cards=["chase-sapphire-old", "gone-too"])

    assert rec.wallet_source == "run"
    assert "No wallet on file" not in rec.reasoning
    assert ("Every card in the stored wallet is retired from the catalog (chase-sapphire-old, gone-too), so "
            "this is the best card in the wallet named for this run") in rec.reasoning
    assert "update the wallet with `rewardpilot wallet set USER CARD...`" in rec.reasoning


def test_reasoning_some_retired_left_out():
    rec = ENGINE.recommend(KROGER, ["citi-double-cash"], retired_cards=["chase-sapphire-old"])

    assert rec.wallet_source == "user"
    assert "The stored wallet's chase-sapphire-old is retired from the catalog and left out" in rec.reasoning


def test_reasoning_all_retired_with_fallback():
    # The run's wallet holds only Amex Gold, which Costco U.S. does not take, so the catalog's best card
    # is recommended and the reasoning gives both causes.
    costco = KROGER.model_copy(update={"merchant": "COSTCO WHSE #0001", "mcc": "5300"})
    rec = ENGINE.recommend_or_fallback(costco, ["amex-gold"], wallet_source="run",
                                       retired_cards=["chase-sapphire-old"])

    assert rec.wallet_source == "catalog"
    assert "No card in this wallet is accepted at COSTCO WHSE #0001" in rec.reasoning
    assert "every card in the stored wallet is retired from the catalog (chase-sapphire-old)" in rec.reasoning


def test_reasoning_some_retired_with_fallback():
    # The stored wallet kept Amex Gold, which Costco U.S. does not take, so not every stored card is retired.
    costco = KROGER.model_copy(update={"merchant": "COSTCO WHSE #0001", "mcc": "5300"})
    rec = ENGINE.recommend_or_fallback(costco, ["amex-gold"], retired_cards=["chase-sapphire-old"])

    assert rec.wallet_source == "catalog"
    assert "No card in this wallet is accepted at COSTCO WHSE #0001" in rec.reasoning
    assert "the stored wallet's chase-sapphire-old is retired from the catalog and left out" in rec.reasoning
    assert "every card" not in rec.reasoning.lower()


def test_reasoning_without_retired_unchanged():
    assert "No wallet on file for this user, so this is the best card in the catalog" in \
        ENGINE.recommend(KROGER, None).reasoning
    assert "No wallet on file for this user, so this is the best card in the wallet named for this run" in \
        ENGINE.recommend(KROGER, ["citi-double-cash"], wallet_source="run").reasoning


@pytest.mark.parametrize(("retired", "fragment"), [
    ("chase-sapphire-old", "retired_cards 'chase-sapphire-old' is one string"),
    (["gone", "amex-gold"], "retired_cards names amex-gold, which the catalog has"),
])
def test_retired_cards_checked(retired, fragment):
    with pytest.raises(ValueError) as raised:
        ENGINE.recommend(KROGER, None, retired_cards=retired)

    assert fragment in str(raised.value)
