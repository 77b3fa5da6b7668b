"""The rules engine against hand-worked examples.

Every expected value below is worked by hand from the card's published terms
(quoted in the comment) and the default valuations in
rewardpilot/data/valuations.json, which come from The Points Guy's January
2026 valuations: Amex Membership Rewards 2.0 cents, Chase Ultimate Rewards
2.05, Citi ThankYou 1.9, Capital One miles 1.85, Wells Fargo Rewards 1.65.
Freedom, Double Cash, Custom Cash and Autograph points on their own redeem at
1.0 cent each (cash back). Cash values round half-even to the cent.
"""

from __future__ import annotations

from decimal import Decimal

import iso18245
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardpilot import ENGINE_VERSION
from rewardpilot.engine import RulesEngine, UnknownCardError
from rewardpilot.models import Recommendation, Transaction

ENGINE = RulesEngine.default()


def tx(mcc: str | None = "5999", amount: str = "21.00", **extra) -> Transaction:
    fields = dict(transaction_id="t1", user_id="u1", merchant="Some Merchant", category="",
                  amount_usd=amount, mcc=mcc, timestamp="2026-03-01T12:00:00Z")
    fields.update(extra)
    return Transaction(**fields)


def cash(rec: Recommendation) -> Decimal:
    return rec.rewards.cash_value_usd


def alternatives(rec: Recommendation) -> list[tuple[str, Decimal]]:
    return [(alt.card.card_id, alt.rewards.cash_value_usd) for alt in rec.alternatives]


# --- hand-worked single cards -------------------------------------------------

def test_amex_gold_at_a_supermarket():
    # Amex Gold: "4X Membership Rewards points at U.S. supermarkets" (on up to $25,000 a year).
    # $21.00 at MCC 5411: 4 x 21.00 = 84 points x 2.0 cents = $1.68; 1.68 / 21.00 = 0.0800.
    rec = ENGINE.recommend(tx("5411", "21.00"), ["amex-gold"])
    assert rec.recommended_card.card_id == "amex-gold"
    assert rec.rewards.amount == Decimal("84")
    assert rec.rewards.unit == "points"
    assert rec.rewards.program == "Amex Membership Rewards"
    assert cash(rec) == Decimal("1.68")
    assert rec.rewards.effective_rate == Decimal("0.0800")
    assert rec.category == "groceries"
    assert rec.confidence == 0.95
    assert rec.reasoning == (
        "Amex Gold earns 4x Membership Rewards points at U.S. supermarkets, valued at 2.0 cents each: "
        "$1.68 on $21.00."
    )


def test_blue_cash_preferred_at_a_supermarket():
    # Blue Cash Preferred: "6% cash back at U.S. supermarkets on up to $6,000 per year".
    # $21.00 x 6% = $1.26 cash back; worth $1.26.
    rec = ENGINE.recommend(tx("5411", "21.00"), ["amex-blue-cash-preferred"])
    assert rec.rewards.amount == Decimal("1.26")
    assert rec.rewards.unit == "USD"
    assert cash(rec) == Decimal("1.26")
    assert rec.rewards.effective_rate == Decimal("0.0600")
    assert "6% cash back at U.S. supermarkets" in rec.reasoning


def test_sapphire_preferred_dining_rounds_half_even():
    # Sapphire Preferred: "3x on dining". $50.00 x 3 = 150 points x 2.05 cents = 307.5 cents
    # = $3.075, which rounds half-even to $3.08.
    rec = ENGINE.recommend(tx("5812", "50.00"), ["chase-sapphire-preferred"])
    assert rec.rewards.amount == Decimal("150")
    assert cash(rec) == Decimal("3.08")


def test_flights_platinum_then_reserve_then_gold():
    # $100.00 at an airline (MCC 4511):
    # Platinum "5X on flights booked directly with airlines": 500 x 2.0c = $10.00.
    # Sapphire Reserve "4x on flights and hotels booked direct": 400 x 2.05c = $8.20.
    # Gold "3X on flights booked directly with airlines": 300 x 2.0c = $6.00.
    rec = ENGINE.recommend(tx("4511", "100.00"), ["amex-gold", "chase-sapphire-reserve", "amex-platinum"])
    assert rec.recommended_card.card_id == "amex-platinum"
    assert cash(rec) == Decimal("10.00")
    assert alternatives(rec) == [("chase-sapphire-reserve", Decimal("8.20")), ("amex-gold", Decimal("6.00"))]
    assert rec.rewards.effective_rate == Decimal("0.1000")


def test_reserve_hotel_booked_direct_beats_preferred():
    # $200.00 at a hotel (MCC 7011): Reserve 4x = 800 x 2.05c = $16.40;
    # Preferred "2x on all other travel" = 400 x 2.05c = $8.20.
    rec = ENGINE.recommend(tx("7011", "200.00"), ["chase-sapphire-reserve", "chase-sapphire-preferred"])
    assert rec.recommended_card.card_id == "chase-sapphire-reserve"
    assert cash(rec) == Decimal("16.40")
    assert alternatives(rec) == [("chase-sapphire-preferred", Decimal("8.20"))]


def test_green_transit_beats_blue_cash_preferred():
    # $12.50 taxi (MCC 4121): Green "3X on transit" = 37.5 points x 2.0c = $0.75;
    # Blue Cash Preferred "3% on transit" = $0.375, half-even $0.38.
    rec = ENGINE.recommend(tx("4121", "12.50"), ["amex-green", "amex-blue-cash-preferred"])
    assert rec.recommended_card.card_id == "amex-green"
    assert rec.rewards.amount == Decimal("37.5")
    assert cash(rec) == Decimal("0.75")
    assert alternatives(rec) == [("amex-blue-cash-preferred", Decimal("0.38"))]
    assert rec.alternatives[0].rewards.amount == Decimal("0.38")


def test_streaming_sapphire_preferred_beats_blue_cash_preferred():
    # $15.49 at a streaming service (MCC 4899): Preferred "3x on select streaming" =
    # 46.47 points x 2.05c = 95.26 cents -> $0.95; Blue Cash Preferred 6% = $0.9294 -> $0.93.
    rec = ENGINE.recommend(tx("4899", "15.49"), ["amex-blue-cash-preferred", "chase-sapphire-preferred"])
    assert rec.recommended_card.card_id == "chase-sapphire-preferred"
    assert cash(rec) == Decimal("0.95")
    assert alternatives(rec) == [("amex-blue-cash-preferred", Decimal("0.93"))]


def test_strata_premier_at_a_gas_station():
    # Strata Premier: "3 ThankYou Points for each $1 spent at gas and EV charging stations".
    # $40.00 x 3 = 120 points x 1.9c = $2.28.
    rec = ENGINE.recommend(tx("5541", "40.00"), ["citi-strata-premier"])
    assert cash(rec) == Decimal("2.28")
    assert rec.rewards.amount == Decimal("120")


def test_custom_cash_top_category_is_assumed_and_lowers_confidence():
    # Custom Cash: "5% on your top eligible spend category each billing cycle, up to $500".
    # $500.00 at a drugstore (MCC 5912): 2,500 ThankYou points x 1.0c = $25.00 (assuming
    # drugstores are the top category). Freedom Unlimited "3% at drugstores" = 1,500 x 1.0c = $15.00.
    rec = ENGINE.recommend(tx("5912", "500.00"), ["citi-custom-cash", "chase-freedom-unlimited"])
    assert rec.recommended_card.card_id == "citi-custom-cash"
    assert cash(rec) == Decimal("25.00")
    assert alternatives(rec) == [("chase-freedom-unlimited", Decimal("15.00"))]
    assert rec.confidence == 0.85  # 0.95 by MCC, -0.10 for the top-category assumption
    assert "top eligible category" in rec.reasoning


def test_custom_cash_points_are_worth_more_with_strata_premier():
    # Custom Cash ThankYou points pool with a Strata Premier in the same wallet, so they are
    # valued at 1.9c: $40.00 gas x 5 = 200 points x 1.9c = $3.80, ahead of the Premier's
    # 120 points x 1.9c = $2.28.
    rec = ENGINE.recommend(tx("5541", "40.00"), ["citi-custom-cash", "citi-strata-premier"])
    assert rec.recommended_card.card_id == "citi-custom-cash"
    assert cash(rec) == Decimal("3.80")
    assert alternatives(rec) == [("citi-strata-premier", Decimal("2.28"))]


def test_equal_gas_rewards_go_to_the_lower_annual_fee():
    # "3% at U.S. gas stations" on both Blue Cash cards: $40.00 x 3% = $1.20 each.
    # Tie broken by annual fee: Everyday ($0) over Preferred ($95). Within a cent, so -0.10.
    rec = ENGINE.recommend(tx("5541", "40.00"), ["amex-blue-cash-preferred", "amex-blue-cash-everyday"])
    assert rec.recommended_card.card_id == "amex-blue-cash-everyday"
    assert cash(rec) == Decimal("1.20")
    assert alternatives(rec) == [("amex-blue-cash-preferred", Decimal("1.20"))]
    assert rec.confidence == 0.85


def test_freedom_points_pool_with_a_sapphire_card():
    # Freedom Unlimited "1.5% on all other purchases" = 1.5 points per dollar.
    # Alone: $10.00 -> 15 points x 1.0c = $0.15.
    # With Sapphire Preferred in the wallet: 15 x 2.05c = 30.75 cents -> $0.31; the Preferred's
    # own 1x = 10 x 2.05c = 20.5 cents -> $0.20 (half-even).
    alone = ENGINE.recommend(tx("5999", "10.00"), ["chase-freedom-unlimited"])
    assert cash(alone) == Decimal("0.15")
    assert "valued at 1.0 cent each" in alone.reasoning
    paired = ENGINE.recommend(tx("5999", "10.00"), ["chase-freedom-unlimited", "chase-sapphire-preferred"])
    assert paired.recommended_card.card_id == "chase-freedom-unlimited"
    assert cash(paired) == Decimal("0.31")
    assert alternatives(paired) == [("chase-sapphire-preferred", Decimal("0.20"))]


def test_autograph_phone_plan_pools_with_autograph_journey():
    # Autograph "3X points on phone plans": $80.00 -> 240 points. Alone at 1.0c = $2.40;
    # with an Autograph Journey in the wallet at 1.65c = $3.96 (the Journey's 1x = 80 x 1.65c = $1.32).
    assert cash(ENGINE.recommend(tx("4814", "80.00"), ["wells-fargo-autograph"])) == Decimal("2.40")
    rec = ENGINE.recommend(tx("4814", "80.00"), ["wells-fargo-autograph", "wells-fargo-autograph-journey"])
    assert cash(rec) == Decimal("3.96")
    assert alternatives(rec) == [("wells-fargo-autograph-journey", Decimal("1.32"))]


# --- abroad, exclusions, ineligible purchases ---------------------------------

def test_foreign_fee_is_netted_from_cash_value():
    # EUR purchase, $100.00 at a restaurant. Sapphire Preferred (no foreign fee): 300 x 2.05c = $6.15.
    # Freedom Unlimited (3% foreign fee), pooled with the Preferred: 300 x 2.05c - $3.00 = $3.15.
    rec = ENGINE.recommend(tx("5812", "100.00", currency="EUR"),
                           ["chase-freedom-unlimited", "chase-sapphire-preferred"])
    assert rec.recommended_card.card_id == "chase-sapphire-preferred"
    assert cash(rec) == Decimal("6.15")
    assert alternatives(rec) == [("chase-freedom-unlimited", Decimal("3.15"))]
    # Alone, Freedom Unlimited's 3% dining at 1.0c exactly cancels its 3% fee: $3.00 - $3.00 = $0.00.
    alone = ENGINE.recommend(tx("5812", "100.00", currency="EUR"), ["chase-freedom-unlimited"])
    assert cash(alone) == Decimal("0.00")
    assert "after its 3% foreign transaction fee" in alone.reasoning


def test_us_only_bonus_does_not_apply_abroad():
    # Gold's 4x is for U.S. supermarkets; in France (merchant_country FR) it earns 1x:
    # $100.00 -> 100 points x 2.0c = $2.00. Active Cash 2% minus its 3% fee = -$1.00.
    rec = ENGINE.recommend(tx("5411", "100.00", merchant_country="FR"),
                           ["amex-gold", "wells-fargo-active-cash"])
    assert rec.recommended_card.card_id == "amex-gold"
    assert cash(rec) == Decimal("2.00")
    assert alternatives(rec) == [("wells-fargo-active-cash", Decimal("-1.00"))]
    assert rec.alternatives[0].rewards.effective_rate == Decimal("-0.0100")


def test_superstores_and_warehouse_clubs_are_not_supermarkets():
    # Amex: superstores (Walmart, Target) and warehouse clubs are not U.S. supermarkets, even
    # when they settle under MCC 5411. $50.00 at Walmart with Gold earns 1x: 50 x 2.0c = $1.00.
    # Capital One Savor excludes superstores from grocery stores too: 1% = $0.50.
    walmart = tx("5411", "50.00", merchant="WALMART SUPERCENTER #1234")
    rec = ENGINE.recommend(walmart, ["amex-gold", "capital-one-savor"])
    assert rec.recommended_card.card_id == "amex-gold"
    assert cash(rec) == Decimal("1.00")
    assert alternatives(rec) == [("capital-one-savor", Decimal("0.50"))]
    assert "on other eligible purchases" in rec.reasoning
    sams = tx("5411", "50.00", merchant="SAM'S CLUB #4821")
    assert cash(ENGINE.recommend(sams, ["amex-gold"])) == Decimal("1.00")
    # A real supermarket earns the bonus: Savor "3% at grocery stores" = $1.50; Gold 4x = $4.00.
    kroger = tx("5411", "50.00", merchant="KROGER #512")
    assert cash(ENGINE.recommend(kroger, ["capital-one-savor"])) == Decimal("1.50")
    assert cash(ENGINE.recommend(kroger, ["amex-gold"])) == Decimal("4.00")


def test_cash_like_transactions_earn_nothing():
    # Card agreements exclude cash advances and cash-like transactions (MCC 6011, ATM cash).
    rec = ENGINE.recommend(tx("6011", "100.00"), ["amex-gold", "citi-double-cash"])
    assert cash(rec) == Decimal("0.00")
    assert rec.rewards.amount == Decimal("0")
    assert rec.recommended_card.card_id == "citi-double-cash"  # $0 annual fee beats $325
    assert "exclude cash-like transactions" in rec.reasoning


# --- whole catalog, category fallbacks ----------------------------------------

def test_whole_catalog_answer_when_no_wallet():
    # $30.00 of other spending (MCC 5999). Best in the catalog: 2x Capital One miles x 1.85c
    # = 3.7% = $1.11 on both Venture ($95 fee) and Venture X ($395); Venture wins the tie.
    # Next: Sapphire Preferred and Reserve, 1x x 2.05c = 61.5 cents -> $0.62 each.
    rec = ENGINE.recommend(tx("5999", "30.00"))
    assert rec.wallet_source == "catalog"
    assert rec.recommended_card.card_id == "capital-one-venture"
    assert rec.rewards.amount == Decimal("60") and rec.rewards.unit == "miles"
    assert cash(rec) == Decimal("1.11")
    assert alternatives(rec) == [
        ("capital-one-venture-x", Decimal("1.11")),
        ("chase-sapphire-preferred", Decimal("0.62")),
        ("chase-sapphire-reserve", Decimal("0.62")),
    ]
    assert "best card in the catalog" in rec.reasoning
    assert rec.confidence == 0.85  # top two within a cent


def test_whole_catalog_at_a_supermarket_is_amex_gold():
    # 4x x 2.0c = 8% beats Blue Cash Preferred's 6% and Strata Premier's 3x x 1.9c = 5.7%.
    rec = ENGINE.recommend(tx("5411", "21.00"), None, wallet_source="catalog")
    assert rec.recommended_card.card_id == "amex-gold"
    assert cash(rec) == Decimal("1.68")
    assert alternatives(rec)[:2] == [("amex-blue-cash-preferred", Decimal("1.26")),
                                     ("citi-strata-premier", Decimal("1.20"))]


def test_run_wallet_is_named_in_the_reasoning():
    rec = ENGINE.recommend(tx("5411"), ["amex-gold"], wallet_source="run")
    assert rec.wallet_source == "run"
    assert "wallet named for this run" in rec.reasoning


def test_missing_mcc_falls_back_on_category_text():
    # No MCC; Sparkov's "grocery_pos" means groceries: Gold 4x on $21.00 = $1.68, confidence 0.75.
    rec = ENGINE.recommend(tx(None, "21.00", category="grocery_pos"), ["amex-gold"])
    assert rec.category == "groceries"
    assert cash(rec) == Decimal("1.68")
    assert rec.confidence == 0.75
    assert 'inferred from the category text "grocery_pos"' in rec.reasoning


def test_unknown_mcc_falls_back_on_category_text():
    # MCC 0001 is not an ISO 18245 code; Chase's "Food & Drink" means dining: Gold 4x = $1.68.
    assert ENGINE.categories.describe("0001") is None
    rec = ENGINE.recommend(tx("0001", "21.00", category="Food & Drink"), ["amex-gold"])
    assert rec.category == "dining"
    assert cash(rec) == Decimal("1.68")
    assert rec.confidence == 0.75
    assert "MCC 0001 is not a known ISO 18245 code" in rec.reasoning


def test_nothing_known_is_other_with_the_lowest_confidence():
    # No MCC, no category text: other spending, Gold 1x = 21 x 2.0c = $0.42, confidence 0.50.
    rec = ENGINE.recommend(tx(None, "21.00", category=""), ["amex-gold"])
    assert rec.category == "other"
    assert cash(rec) == Decimal("0.42")
    assert rec.confidence == 0.5
    mcc_known = ENGINE.recommend(tx("5999", "21.00"), ["amex-gold"])
    text_known = ENGINE.recommend(tx(None, "21.00", category="Shopping"), ["amex-gold"])
    assert mcc_known.confidence > text_known.confidence > rec.confidence


def test_unlisted_code_in_the_airline_range_is_airfare_by_range():
    # 3073 sits in the airline range 3000-3350 but iso18245 does not list it.
    assert ENGINE.categories.describe("3073") is None
    rec = ENGINE.recommend(tx("3073", "100.00"), ["amex-platinum"])
    assert rec.category == "airfare"
    assert cash(rec) == Decimal("10.00")
    assert rec.confidence == 0.6


@pytest.mark.parametrize("text, category", [
    ("grocery_net", "online_groceries"), ("food_dining", "dining"), ("gas_transport", "gas"),
    ("shopping_net", "online_retail"), ("pharmacy", "drugstores"), ("travel", "travel"),
    ("Food & Drink", "dining"), ("Groceries", "groceries"), ("Gas", "gas"), ("Shopping", "other"),
    ("Other Travel", "travel"), ("Travel-Airline", "airfare"), ("Transportation-Fuel", "gas"),
    ("Merchandise & Supplies-Groceries", "groceries"), ("FOOD_AND_DRINK_COFFEE", "dining"),
    ("TRAVEL_FLIGHTS", "airfare"), ("Restaurant-Bar & Café", "dining"), ("Business Services", None),
    ("Personal Training", None),  # "train " is a whole-word keyword: not transit
])
def test_category_text(text, category):
    assert ENGINE.categories.for_text(text) == category


@pytest.mark.parametrize("mcc, category", [
    ("3000", "airfare"), ("4511", "airfare"), ("3351", "car_rental"), ("7512", "car_rental"),
    ("3501", "hotels"), ("7011", "hotels"), ("5411", "groceries"), ("5300", "wholesale_clubs"),
    ("5311", "general_merchandise"), ("5541", "gas"), ("5812", "dining"), ("5814", "dining"),
    ("5912", "drugstores"), ("4121", "transit"), ("4899", "streaming"), ("6011", "cash_equivalent"),
    ("7995", "gambling"), ("0742", "other"),
])
def test_mcc_categories(mcc, category):
    assert ENGINE.categories.for_mcc(mcc) == category


# --- data and API contracts ----------------------------------------------------

def test_every_iso18245_mcc_maps_to_a_known_category():
    codes = [mcc.mcc for mcc in iso18245.get_all_mccs()]
    assert len(codes) > 900
    for code in codes:
        assert ENGINE.categories.for_mcc(code) in ENGINE.categories.categories, code


REQUIRED_CARDS = [
    "amex-gold", "amex-platinum", "amex-blue-cash-preferred", "chase-sapphire-preferred",
    "chase-sapphire-reserve", "chase-freedom-unlimited", "chase-freedom-flex", "citi-double-cash",
    "citi-custom-cash", "capital-one-savor", "capital-one-venture-x", "wells-fargo-active-cash",
    "discover-it-cash-back",
]


def test_catalog_has_the_named_cards_each_with_source_and_date():
    catalog = ENGINE.catalog
    assert catalog.version
    assert len(catalog.cards) >= 15
    assert set(REQUIRED_CARDS) <= set(catalog.ids)
    for card in catalog.cards:
        assert card.source.startswith("https://"), card.card_id
        assert card.terms_as_of.year >= 2025, card.card_id
        assert card.network in ("visa", "mastercard", "amex", "discover")
        assert card.values_as in ENGINE.valuations.programs
    rotating = {card.card_id for card in catalog.cards if any(r.kind == "rotating" for r in card.earn)}
    assert rotating == {"chase-freedom-flex", "discover-it-cash-back"}


def test_unknown_card_id_names_close_matches():
    with pytest.raises(UnknownCardError) as caught:
        ENGINE.catalog.get("amex-golde")
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, ValueError)
    assert "amex-gold" in str(caught.value)
    with pytest.raises(UnknownCardError):
        ENGINE.recommend(tx("5411"), ["amex-gold", "no-such-card"])


def test_aliases_resolve_to_catalog_ids():
    assert ENGINE.catalog.get("csp").card_id == "chase-sapphire-preferred"
    assert ENGINE.catalog.get("Amex Gold").card_id == "amex-gold"
    rec = ENGINE.recommend(tx("5812", "50.00"), ["csp"])
    assert rec.recommended_card.card_id == "chase-sapphire-preferred"


def test_bad_wallet_arguments():
    with pytest.raises(ValueError):
        ENGINE.recommend(tx(), [])
    with pytest.raises(ValueError):
        ENGINE.recommend(tx(), "amex-gold")
    with pytest.raises(ValueError):
        ENGINE.recommend(tx(), None, wallet_source="user")


def test_valuation_overrides():
    # Valuing Membership Rewards at 1.0 cent: 84 points x 1.0c = $0.84.
    rec = ENGINE.recommend(tx("5411", "21.00"), ["amex-gold"], valuations={"Amex Membership Rewards": "1.0"})
    assert cash(rec) == Decimal("0.84")
    assert "valued at 1.0 cent each" in rec.reasoning
    # Defaults are untouched afterwards.
    assert cash(ENGINE.recommend(tx("5411", "21.00"), ["amex-gold"])) == Decimal("1.68")
    with pytest.raises(ValueError):
        ENGINE.recommend(tx(), ["amex-gold"], valuations={"Nonexistent Points": 1})
    with pytest.raises(ValueError):
        ENGINE.recommend(tx(), ["amex-gold"], valuations={"Amex Membership Rewards": "-1"})


def test_recommendation_fields_and_round_trip():
    rec = ENGINE.recommend(tx("5411", "21.00"), ["amex-gold", "citi-double-cash"])
    assert rec.transaction_id == "t1" and rec.user_id == "u1"
    assert rec.engine_version == ENGINE_VERSION
    assert rec.catalog_version == ENGINE.catalog.version
    assert rec.processing_time_ms >= 0
    assert rec.entry_id is None and rec.run == "live"
    assert rec.amount_usd == Decimal("21.00")
    # The engine builds the result without re-validating; it must equal a validated copy.
    assert Recommendation.model_validate_json(rec.model_dump_json()) == rec
    assert Recommendation.model_validate(rec.model_dump()) == rec


CARD_IDS = sorted(ENGINE.catalog.ids)
MCCS = sorted({mcc.mcc for mcc in iso18245.get_all_mccs()})


@settings(max_examples=300, deadline=None)
@given(
    mcc=st.one_of(st.none(), st.sampled_from(MCCS)),
    cents=st.integers(min_value=1, max_value=10_000_000),
    wallet=st.one_of(st.none(), st.lists(st.sampled_from(CARD_IDS), min_size=1, max_size=8)),
    abroad=st.booleans(),
)
def test_alternatives_are_at_most_three_and_never_better(mcc, cents, wallet, abroad):
    amount = f"{cents / 100:.2f}"
    extra = {"currency": "EUR"} if abroad else {}
    rec = ENGINE.recommend(tx(mcc, amount, category="groceries", **extra), wallet)
    assert len(rec.alternatives) <= 3
    assert 0.0 <= rec.confidence <= 1.0
    values = [cash(rec)] + [alt.rewards.cash_value_usd for alt in rec.alternatives]
    assert values == sorted(values, reverse=True)
    ids = [rec.recommended_card.card_id] + [alt.card.card_id for alt in rec.alternatives]
    assert len(set(ids)) == len(ids)
    if wallet is not None:
        assert set(ids) <= set(wallet)
        assert len(ids) == min(4, len(set(wallet)))


def test_no_accepted_card_falls_back_to_catalog():
    engine = RulesEngine.default()
    costco = Transaction(transaction_id="c1", user_id="u", merchant="Costco Wholesale",
                         category="warehouse club", amount_usd="218.40", mcc="5300")

    answer = engine.recommend_or_fallback(costco, ["amex-gold", "capital-one-savor"], wallet_source="user")

    assert answer.wallet_source == "catalog"
    assert engine.catalog.get(answer.recommended_card.card_id).network == "visa"
    assert "No card in this wallet is accepted at Costco Wholesale" in answer.reasoning
    assert "passed over: Amex Gold: not accepted here" in answer.reasoning
    assert "cards were passed over" not in answer.reasoning
    # Each entry starts with the card's short name, as when a wallet card is accepted.
    assert answer.passed_over == [
        "Amex Gold: not accepted here (Costco U.S. warehouses and gas stations take Visa only)",
        "Capital One Savor: not accepted here (Costco U.S. warehouses and gas stations take Visa only)",
    ]


@pytest.mark.parametrize(
    ("merchant", "category"),
    [
        ("05354 SUBWAY", "dining"),
        ("WENDY'S #6338", "dining"),
        ("STARBUCKS STORE 1234 SEATTLE WA", "dining"),
        ("UBER EATS", "dining"),
        ("UBER *TRIP", "transit"),
        ("SHELL OIL 57444", "gas"),
        ("WHOLE FOODS MARKET #10", "groceries"),
    ],
)
def test_merchant_name_places_category(merchant, category):
    engine = RulesEngine.default()
    purchase = Transaction(transaction_id="m1", user_id="u", merchant=merchant, amount_usd="10.00")

    answer = engine.recommend(purchase, ["citi-double-cash", "amex-gold"], wallet_source="user")

    assert answer.category == category
    assert answer.confidence < 0.95
    assert "merchant name" in answer.reasoning


def test_merchant_name_not_used_over_mcc():
    engine = RulesEngine.default()
    purchase = Transaction(transaction_id="m2", user_id="u", merchant="STARBUCKS", amount_usd="10.00", mcc="5411")

    assert engine.recommend(purchase).category == "groceries"


def test_merchant_name_over_generic_category_text():
    engine = RulesEngine.default()
    purchase = Transaction(transaction_id="m3", user_id="u", merchant="COSTCO WHSE #01234", category="Shopping",
                           amount_usd="85.20")

    answer = engine.recommend(purchase)

    assert answer.category == "wholesale_clubs"
    assert "the category text \"Shopping\" names no reward category" in answer.reasoning


def test_specific_category_text_over_merchant_name():
    engine = RulesEngine.default()
    purchase = Transaction(transaction_id="m4", user_id="u", merchant="STARBUCKS", category="Groceries",
                           amount_usd="10.00")

    answer = engine.recommend(purchase)

    assert answer.category == "groceries"
    assert "merchant name" not in answer.reasoning
