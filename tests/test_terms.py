"""Worked cases from published card terms: caps over time, rotating and top
categories, merchant acceptance, exclusions, valuations, modes and foreign fees.

Each case names the issuer page its term comes from (the card's ``source`` in
rewardpilot/data/cards.json) and works the expected card and rewards by hand.
Default valuations (rewardpilot/data/valuations.json): Amex Membership Rewards
2.0 cents, Chase Ultimate Rewards 2.05, Citi ThankYou 1.9, Capital One miles
1.85; Freedom, Double Cash and Custom Cash points on their own 1.0 cent; cash
back 1.0. Cash values round half-even to the cent. Times are UTC in the
transaction; periods end at midnight Eastern Time (EDT is UTC-4 until
November 2, 2025).
"""

from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources

import iso18245
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rewardpilot.engine import RulesEngine
from rewardpilot.engine.catalog import Catalog
from rewardpilot.engine.categories import default_categories
from rewardpilot.engine.valuations import default_valuations
from rewardpilot.engine.errors import InvalidModeError, NoUsableCardError
from rewardpilot.engine.state import SpendState, cycle_start, field_name, period_key
from rewardpilot.models import Recommendation, Transaction

ENGINE = RulesEngine.default()

AMEX_GOLD = "https://www.americanexpress.com/us/credit-cards/card/gold-card/"
AMEX_BCP = "https://www.americanexpress.com/us/credit-cards/card/blue-cash-preferred/"
CHASE_FLEX = "https://creditcards.chase.com/cash-back-credit-cards/freedom/flex"
CHASE_FLEX_CALENDAR = "https://www.chase.com/personal/credit-cards/freedom/freedomfive"
DISCOVER_CALENDAR = "https://www.discover.com/credit-cards/cash-back/cashback-calendar.html"
CITI_CUSTOM_CASH = "https://www.citi.com/credit-cards/citi-custom-cash-credit-card"
COSTCO_PAYMENT = "https://customerservice.costco.com/app/answers/answer_view/a_id/1149"

MAY_2026 = "2026-05-10T16:00:00Z"


def tx(mcc: str | None = "5999", amount: str = "100.00", *, when: str = MAY_2026,
       merchant: str = "Some Merchant", **extra) -> Transaction:
    fields = dict(transaction_id="t1", user_id="u1", merchant=merchant, category="",
                  amount_usd=amount, mcc=mcc, timestamp=when)
    fields.update(extra)
    return Transaction(**fields)


def cash(rec: Recommendation) -> Decimal:
    return rec.rewards.cash_value_usd


def card(rec: Recommendation) -> str:
    return rec.recommended_card.card_id


def alternatives(rec: Recommendation) -> list[tuple[str, Decimal]]:
    return [(alt.card.card_id, alt.rewards.cash_value_usd) for alt in rec.alternatives]


def state_with(spend: dict[str, int] | None = None, *, user: str = "u1",
               activations: dict[str, list[str]] | None = None, cycle_day: int | None = None) -> SpendState:
    state = SpendState()
    state.set_terms(user, activations=activations, cycle_day=cycle_day)
    for name, cents in (spend or {}).items():
        state.add(user, name, cents)
    return state


# --- caps over a calendar year ------------------------------------------------

def test_bcp_purchase_crossing_supermarket_cap():
    # AMEX_BCP: 6% at U.S. supermarkets on up to $6,000 a year, then 1%.
    # $5,600 already spent; $1,000 at Kroger: $400 x 6% = $24.00 + $600 x 1% = $6.00 = $30.00.
    state = state_with({"amex-blue-cash-preferred|us-supermarkets|2026": 560_000})
    rec = ENGINE.recommend(tx("5411", "1000.00", merchant="KROGER #512"), ["amex-blue-cash-preferred"], state=state)
    assert card(rec) == "amex-blue-cash-preferred"
    assert cash(rec) == Decimal("30.00")
    assert rec.rewards.amount == Decimal("30.00")
    assert "$400.00 of the purchase was under the $6,000.00 calendar-year cap" in rec.reasoning
    assert "$600.00 earns 1% cash back" in rec.reasoning
    assert rec.spend_updates == [("amex-blue-cash-preferred|us-supermarkets|2026", 100_000)]
    assert state.spent("u1", "amex-blue-cash-preferred|us-supermarkets|2026") == 660_000


def test_bcp_under_cap_earns_full_bonus():
    # AMEX_BCP: $100 at a supermarket with nothing spent this year: 6% = $6.00.
    rec = ENGINE.recommend(tx("5411", "100.00"), ["amex-blue-cash-preferred"], state=state_with())
    assert cash(rec) == Decimal("6.00")
    assert rec.confidence == 0.95


def test_bcp_cap_used_up_loses_to_double_cash():
    # AMEX_BCP: the $6,000 is spent, so $100 earns 1% = $1.00; Citi Double Cash 2 points
    # per dollar x 1.0 cent = $2.00 (https://www.citi.com/credit-cards/citi-double-cash-credit-card).
    state = state_with({"amex-blue-cash-preferred|us-supermarkets|2026": 600_000})
    rec = ENGINE.recommend(tx("5411", "100.00"), ["amex-blue-cash-preferred", "citi-double-cash"], state=state)
    assert card(rec) == "citi-double-cash"
    assert cash(rec) == Decimal("2.00")
    assert alternatives(rec) == [("amex-blue-cash-preferred", Decimal("1.00"))]
    # The spend counts on the card recommended, which has no cap here.
    assert rec.spend_updates == []


def test_bcp_single_purchase_above_cap_without_state():
    # AMEX_BCP: no spend recorded, $7,000 at a supermarket: $6,000 x 6% = $360.00
    # + $1,000 x 1% = $10.00 = $370.00.
    rec = ENGINE.recommend(tx("5411", "7000.00"), ["amex-blue-cash-preferred"])
    assert cash(rec) == Decimal("370.00")
    assert rec.spend_updates == []


def test_gold_supermarket_cap_crossed():
    # AMEX_GOLD: 4x at U.S. supermarkets on up to $25,000 a year, then 1x. $24,900 spent;
    # $250: 100 x 4 = 400 + 150 x 1 = 150 = 550 points x 2.0 cents = $11.00.
    state = state_with({"amex-gold|us-supermarkets|2026": 2_490_000})
    rec = ENGINE.recommend(tx("5411", "250.00"), ["amex-gold"], state=state)
    assert rec.rewards.amount == Decimal("550")
    assert cash(rec) == Decimal("11.00")
    assert rec.rewards.effective_rate == Decimal("0.0440")


def test_gold_near_cap_loses_to_bcp_with_room():
    # AMEX_GOLD and AMEX_BCP: Gold as above $11.00; BCP with nothing spent: $250 x 6% = $15.00.
    state = state_with({"amex-gold|us-supermarkets|2026": 2_490_000})
    rec = ENGINE.recommend(tx("5411", "250.00"), ["amex-gold", "amex-blue-cash-preferred"], state=state)
    assert card(rec) == "amex-blue-cash-preferred"
    assert cash(rec) == Decimal("15.00")
    assert alternatives(rec) == [("amex-gold", Decimal("11.00"))]
    assert "under the $25,000.00 calendar-year cap" in rec.alternatives[0].note


def test_gold_online_groceries_share_supermarket_cap():
    # AMEX_GOLD: the U.S. supermarkets cap is one cap; Sparkov's grocery_net text places
    # the purchase in online_groceries, which the same rule covers. $24,990 spent, $20:
    # 10 x 4 + 10 x 1 = 50 points x 2.0 cents = $1.00.
    state = state_with({"amex-gold|us-supermarkets|2026": 2_499_000})
    rec = ENGINE.recommend(tx(None, "20.00", category="grocery_net"), ["amex-gold"], state=state)
    assert rec.category == "online_groceries"
    assert cash(rec) == Decimal("1.00")
    assert rec.spend_updates == [("amex-gold|us-supermarkets|2026", 2_000)]


def test_cap_period_is_the_calendar_year():
    # AMEX_BCP: the $6,000 is per calendar year, so 2025's spend does not limit 2026.
    state = state_with({"amex-blue-cash-preferred|us-supermarkets|2025": 600_000})
    rec = ENGINE.recommend(tx("5411", "100.00"), ["amex-blue-cash-preferred"], state=state)
    assert cash(rec) == Decimal("6.00")


def test_batch_purchases_see_each_others_spend():
    # AMEX_BCP: $5,900 spent; two $100 purchases in one batch: the first earns 6% = $6.00,
    # the second is entirely above the cap: 1% = $1.00.
    state = state_with({"amex-blue-cash-preferred|us-supermarkets|2026": 590_000})
    first = ENGINE.recommend(tx("5411", "100.00"), ["amex-blue-cash-preferred"], state=state)
    second = ENGINE.recommend(tx("5411", "100.00", transaction_id="t2"), ["amex-blue-cash-preferred"], state=state)
    assert cash(first) == Decimal("6.00")
    assert cash(second) == Decimal("1.00")


# --- rotating quarterly categories -------------------------------------------

def test_flex_combined_quarter_cap_crossed_on_ev_charging():
    # CHASE_FLEX_CALENDAR, 2025 Q3: gas stations, EV charging, Instacart share one $1,500 cap.
    # $1,400 spent on gas; $300 at EV charging (MCC 5552): 100 x 5 = 500 + 200 x 1 = 200
    # = 700 points x 1.0 cent = $7.00.
    state = state_with({"chase-freedom-flex|rotating|2025Q3": 140_000},
                       activations={"chase-freedom-flex": ["2025Q3"]})
    rec = ENGINE.recommend(tx("5552", "300.00", when="2025-08-10T16:00:00Z"), ["chase-freedom-flex"], state=state)
    assert rec.rewards.amount == Decimal("700")
    assert cash(rec) == Decimal("7.00")
    assert rec.spend_updates == [("chase-freedom-flex|rotating|2025Q3", 30_000)]


def test_flex_instacart_counts_against_gas_spend():
    # CHASE_FLEX_CALENDAR, 2025 Q3: $1,000 at a gas station = 5,000 points = $50.00; then
    # $600 at Instacart (by merchant name): 500 x 5 + 100 x 1 = 2,600 points = $26.00.
    state = state_with(activations={"chase-freedom-flex": ["2025Q3"]})
    gas = ENGINE.recommend(tx("5541", "1000.00", when="2025-08-01T16:00:00Z"), ["chase-freedom-flex"], state=state)
    instacart = ENGINE.recommend(
        tx("5411", "600.00", when="2025-08-02T16:00:00Z", merchant="INSTACART*HQ", transaction_id="t2"),
        ["chase-freedom-flex"], state=state,
    )
    assert cash(gas) == Decimal("50.00")
    assert cash(instacart) == Decimal("26.00")
    assert instacart.rewards.amount == Decimal("2600")


def test_flex_quarter_boundary_eastern_time():
    # CHASE_FLEX_CALENDAR: Q3 2025 has gas stations, Q4 2025 does not. A $100 gas purchase at
    # 23:30 EDT on September 30 (03:30 UTC October 1) is Q3: 500 points = $5.00; at 00:30 EDT
    # on October 1 it is Q4: 100 points = $1.00.
    activations = {"chase-freedom-flex": ["2025Q3", "2025Q4"]}
    before = ENGINE.recommend(tx("5541", "100.00", when="2025-10-01T03:30:00Z"), ["chase-freedom-flex"],
                              state=state_with(activations=activations))
    after = ENGINE.recommend(tx("5541", "100.00", when="2025-10-01T04:30:00Z"), ["chase-freedom-flex"],
                             state=state_with(activations=activations))
    assert cash(before) == Decimal("5.00")
    assert before.spend_updates == [("chase-freedom-flex|rotating|2025Q3", 10_000)]
    assert cash(after) == Decimal("1.00")
    assert after.spend_updates == []


def test_discover_quarter_boundary_eastern_time():
    # DISCOVER_CALENDAR: Q2 2025 is grocery stores and wholesale clubs, Q3 2025 gas stations.
    # $100 of gas at 23:30 EDT June 30 (03:30 UTC July 1): Q2, 1% = $1.00; at 00:30 EDT July 1: 5% = $5.00.
    activations = {"discover-it-cash-back": ["2025Q2", "2025Q3"]}
    before = ENGINE.recommend(tx("5541", "100.00", when="2025-07-01T03:30:00Z"), ["discover-it-cash-back"],
                              state=state_with(activations=activations))
    after = ENGINE.recommend(tx("5541", "100.00", when="2025-07-01T04:30:00Z"), ["discover-it-cash-back"],
                             state=state_with(activations=activations))
    assert cash(before) == Decimal("1.00")
    assert cash(after) == Decimal("5.00")


def test_discover_not_activated_earns_base():
    # DISCOVER_CALENDAR, Q3 2025 gas, but the wallet has no activation for 2025Q3: 1% = $1.00.
    rec = ENGINE.recommend(tx("5541", "100.00", when="2025-08-10T16:00:00Z"), ["discover-it-cash-back"],
                           state=state_with())
    assert cash(rec) == Decimal("1.00")
    assert rec.passed_over == ["Discover it: its 2025Q3 5% categories are not activated in this wallet"]
    assert "not activated" in rec.reasoning


def test_discover_activation_assumed_without_state():
    # DISCOVER_CALENDAR, Q3 2025 gas, no state: activation is assumed, $100 x 5% = $5.00,
    # confidence 0.95 by MCC - 0.10 for the assumption = 0.85.
    rec = ENGINE.recommend(tx("5541", "100.00", when="2025-08-10T16:00:00Z"), ["discover-it-cash-back"])
    assert cash(rec) == Decimal("5.00")
    assert rec.confidence == 0.85
    assert "assumes the quarter's 5% categories are activated" in rec.reasoning


def test_discover_quarterly_cap_crossed():
    # DISCOVER_CALENDAR, Q2 2025 grocery stores, $1,450 spent; $200 at a supermarket:
    # $50 x 5% = $2.50 + $150 x 1% = $1.50 = $4.00.
    state = state_with({"discover-it-cash-back|rotating|2025Q2": 145_000},
                       activations={"discover-it-cash-back": ["2025Q2"]})
    rec = ENGINE.recommend(tx("5411", "200.00", when="2025-05-05T16:00:00Z"), ["discover-it-cash-back"], state=state)
    assert cash(rec) == Decimal("4.00")
    assert "under the $1,500.00 quarterly cap" in rec.reasoning


def test_discover_amazon_in_q4_2025():
    # DISCOVER_CALENDAR, Q4 2025: Amazon.com. $40.00 at "Amazon.com*RT4XY2" (MCC 5942): 5% = $2.00.
    rec = ENGINE.recommend(tx("5942", "40.00", when="2025-11-10T16:00:00Z", merchant="Amazon.com*RT4XY2"),
                           ["discover-it-cash-back"])
    assert cash(rec) == Decimal("2.00")


def test_discover_whole_foods_not_amazon():
    # DISCOVER_CALENDAR, Q4 2025: Whole Foods Market purchases are not Amazon.com; groceries
    # are not a Q4 category. $50.00 x 1% = $0.50.
    rec = ENGINE.recommend(tx("5411", "50.00", when="2025-11-10T16:00:00Z", merchant="WHOLE FOODS MARKET #10"),
                           ["discover-it-cash-back"])
    assert cash(rec) == Decimal("0.50")


DISCOVER_2026_Q1 = "https://www.cardsandpoints.com/discover-cash-back-categories"


def test_discover_q1_2026_worked_case():
    # DISCOVER_2026_Q1: grocery stores and wholesale clubs, January to March 2026.
    # $100.00 at a grocery store (MCC 5411) x 5% = $5.00.
    # $60.00 at a wholesale club (MCC 5300) x 5% = $3.00.
    # 04:30 UTC on April 1 is April 1 in New York, after the quarter: 1% = $1.00.
    grocery = ENGINE.recommend(tx("5411", "100.00", when="2026-02-10T16:00:00Z"), ["discover-it-cash-back"])
    club = ENGINE.recommend(tx("5300", "60.00", when="2026-03-31T20:00:00Z"), ["discover-it-cash-back"])
    april = ENGINE.recommend(tx("5411", "100.00", when="2026-04-01T04:30:00Z"), ["discover-it-cash-back"])

    assert cash(grocery) == Decimal("5.00")
    assert cash(club) == Decimal("3.00")
    assert cash(april) == Decimal("1.00")


def test_flex_q1_2025_hair_salon_by_mcc():
    # CHASE_FLEX_CALENDAR, Q1 2025: hair, nails and spa services. $80.00 at MCC 7230 (beauty
    # shops): 400 points x 1.0 cent = $4.00.
    rec = ENGINE.recommend(tx("7230", "80.00", when="2025-02-10T16:00:00Z"), ["chase-freedom-flex"])
    assert cash(rec) == Decimal("4.00")


def test_flex_q4_2025_department_store():
    # CHASE_FLEX_CALENDAR, Q4 2025: department stores (MCC 5311). $200.00 at Macy's:
    # 1,000 points x 1.0 cent = $10.00, ahead of Double Cash's 400 points x 1.0 = $4.00.
    rec = ENGINE.recommend(tx("5311", "200.00", when="2025-11-10T16:00:00Z", merchant="MACY'S #112"),
                           ["chase-freedom-flex", "citi-double-cash"])
    assert card(rec) == "chase-freedom-flex"
    assert cash(rec) == Decimal("10.00")
    assert alternatives(rec) == [("citi-double-cash", Decimal("4.00"))]


FLEX_Q1_2025_EXCLUSION = ("Freedom Flex: purchases at Walmart and Target are excluded from groceries, "
                          "one of its 2025Q1 5% categories")


@pytest.mark.parametrize("merchant", ["WALMART SUPERCENTER #1234", "WAL-MART #0042", "TARGET 00012345",
                                      "Target.com"])
def test_flex_q1_2025_walmart_target_excluded(merchant):
    # CHASE_FLEX_CALENDAR, Q1 2025: grocery stores, Walmart and Target excluded. $100.00 at
    # MCC 5411 earns the base 1x: 100 points x 1.0 cent = $1.00, and none of the $1,500 cap.
    state = state_with(activations={"chase-freedom-flex": ["2025Q1"]})
    rec = ENGINE.recommend(tx("5411", "100.00", when="2025-02-01T12:00:00Z", merchant=merchant),
                           ["chase-freedom-flex"], state=state)
    assert cash(rec) == Decimal("1.00")
    assert rec.rewards.amount == Decimal("100")
    assert rec.spend_updates == []
    assert rec.passed_over == [FLEX_Q1_2025_EXCLUSION]
    assert FLEX_Q1_2025_EXCLUSION in rec.reasoning


def test_flex_q1_2025_supermarket_earns_5x():
    # CHASE_FLEX_CALENDAR, Q1 2025: $100.00 at Kroger (MCC 5411) is a grocery store: 500 points
    # = $5.00, and the $100 counts against the quarterly cap.
    state = state_with(activations={"chase-freedom-flex": ["2025Q1"]})
    rec = ENGINE.recommend(tx("5411", "100.00", when="2025-02-01T12:00:00Z", merchant="KROGER #512"),
                           ["chase-freedom-flex"], state=state)
    assert cash(rec) == Decimal("5.00")
    assert rec.spend_updates == [("chase-freedom-flex|rotating|2025Q1", 10_000)]
    assert rec.passed_over == []


def test_flex_q1_2025_exclusion_without_state():
    # Without spend state activation would be assumed, but Walmart is excluded whatever the
    # activation: 1x = $1.00, nothing assumed, so the confidence stays 0.95 (by MCC).
    rec = ENGINE.recommend(tx("5411", "100.00", when="2025-02-01T12:00:00Z", merchant="WALMART #12"),
                           ["chase-freedom-flex"])
    assert cash(rec) == Decimal("1.00")
    assert rec.confidence == 0.95
    assert "assumes" not in rec.reasoning
    assert rec.passed_over == [FLEX_Q1_2025_EXCLUSION]


def test_flex_exclusion_named_before_activation():
    # An excluded merchant earns no bonus even when activated, so the missing activation is
    # not what the reasoning gives as the cause.
    rec = ENGINE.recommend(tx("5411", "100.00", when="2025-02-01T12:00:00Z", merchant="TARGET T-1"),
                           ["chase-freedom-flex"], state=state_with())
    assert rec.passed_over == [FLEX_Q1_2025_EXCLUSION]
    assert "not activated" not in rec.reasoning


def test_flex_q1_2025_exclusion_in_rewards_for():
    state = state_with(activations={"chase-freedom-flex": ["2025Q1"]})
    rewards = ENGINE.rewards_for(tx("5411", "100.00", when="2025-02-01T12:00:00Z", merchant="WALMART #12"),
                                 "chase-freedom-flex", state=state)
    assert rewards.cash_value_usd == Decimal("1.00")


def test_walmart_earns_in_quarter_without_exclusion():
    # CHASE_FLEX_CALENDAR, Q3 2025: gas stations, with no exclusion. $50.00 of gas at a Walmart
    # fuel station (MCC 5541) earns 5x: 250 points = $2.50.
    state = state_with(activations={"chase-freedom-flex": ["2025Q3"]})
    rec = ENGINE.recommend(tx("5541", "50.00", when="2025-08-10T16:00:00Z", merchant="WALMART FUEL #12"),
                           ["chase-freedom-flex"], state=state)
    assert cash(rec) == Decimal("2.50")
    assert rec.spend_updates == [("chase-freedom-flex|rotating|2025Q3", 5_000)]


def test_discover_q4_2025_whole_foods_on_amazon_excluded():
    # DISCOVER_CALENDAR, Q4 2025: Amazon.com, Whole Foods Market not included. $50.00 at
    # "AMAZON.COM*WHOLE FOODS" matches the Amazon.com name but is excluded: 1% = $0.50.
    rec = ENGINE.recommend(tx("5411", "50.00", when="2025-11-10T16:00:00Z", merchant="AMAZON.COM*WHOLE FOODS"),
                           ["discover-it-cash-back"], state=state_with(activations={"discover-it-cash-back": ["2025Q4"]}))
    assert cash(rec) == Decimal("0.50")
    assert rec.spend_updates == []
    assert rec.passed_over == ["Discover it: purchases at Whole Foods Market are excluded from its 2025Q4 5% categories"]


def test_quarter_notes_with_exclusions_are_enforced():
    # A quarter whose note states an exclusion must list it in ``exclusions``, or the engine pays the bonus.
    data = bundled_catalog_data()
    unenforced = []
    for entry in data["cards"]:
        for rule in entry["earn"]:
            for quarter in rule.get("calendar", []):
                note = quarter.get("note", "").lower()
                states_exclusion = "excluded" in note or "not included" in note or "excluding" in note
                if states_exclusion and not quarter.get("exclusions"):
                    unenforced.append(f"{entry['card_id']} {quarter['quarter']}")
    assert unenforced == []


@pytest.mark.parametrize(("exclusion", "fragment"), [
    ({"label": "Walmart", "merchants": []}, "at least 1 item"),
    ({"label": "", "merchants": ["walmart"]}, "at least 1 character"),
    ({"label": "Walmart", "merchants": ["--"]}, "merchant names ['--'] contain no letter or digit"),
    ({"label": "Walmart", "merchant": ["walmart"]}, "Extra inputs are not permitted"),
])
def test_quarter_exclusion_validated(exclusion, fragment):
    data = bundled_catalog_data()
    flex_quarter(data, "2025-Q2")["exclusions"] = [exclusion]
    with pytest.raises(ValidationError) as raised:
        Catalog.model_validate(data)
    assert fragment in str(raised.value)
    assert "calendar.1.exclusions.0" in str(raised.value)


def test_flex_rotating_ends_after_transcribed_quarters():
    # CHASE_FLEX_CALENDAR: no 2026 quarter is transcribed, so gas in May 2026 earns 1x = $1.00.
    rec = ENGINE.recommend(tx("5541", "100.00"), ["chase-freedom-flex"])
    assert cash(rec) == Decimal("1.00")


# --- top category (Citi Custom Cash) ------------------------------------------

CC_CYCLE = "cycle:2026-11-15"


def test_custom_cash_top_category_switches_within_cycle():
    # CITI_CUSTOM_CASH: 5% on the top eligible category each billing cycle, up to $500, then 1%.
    # A purchase earns 5% on the dollars by which it raises the top category's spend.
    # Cycle from November 15; $100 dining so far, so the top category has $100.
    state = state_with({field_name("citi-custom-cash", "top:dining", CC_CYCLE): 10_000}, cycle_day=15)
    when = "2026-11-20T17:00:00Z"
    # $150 gas: gas overtakes dining and the top spend goes from $100 to $150, so $50 x 5 + $100 x 1
    # = 350 points x 1.0 cent = $3.50. Dining's $100 loses the bonus that gas's first $100 takes.
    gas = ENGINE.recommend(tx("5541", "150.00", when=when), ["citi-custom-cash"], state=state)
    assert cash(gas) == Decimal("3.50")
    assert gas.spend_updates == [(field_name("citi-custom-cash", "top:gas", CC_CYCLE), 15_000)]
    assert "Gas overtakes dining ($100.00 this billing cycle) as the top category" in gas.reasoning
    assert "so $50.00 of the purchase adds to it and the other $100.00 earns 1x" in gas.reasoning
    # $30 dining: 130 < 150 on gas, so 1x = 30 points = $0.30.
    dining = ENGINE.recommend(tx("5812", "30.00", when=when, transaction_id="t2"), ["citi-custom-cash"], state=state)
    assert cash(dining) == Decimal("0.30")
    assert "Dining is not its top category this billing cycle ($130.00 against $150.00 on gas)" in dining.reasoning
    assert dining.reasoning.startswith("Citi Custom Cash earns 1x ThankYou points without the bonus")
    # $40 more dining: 170 > 150, so the top spend rises by $20: 20 x 5 + 20 x 1 = 120 points = $1.20.
    again = ENGINE.recommend(tx("5812", "40.00", when=when, transaction_id="t3"), ["citi-custom-cash"], state=state)
    assert cash(again) == Decimal("1.20")
    # The cycle: $320 in all, $170 of it in the top category (dining): 170 x 5 + 150 x 1 = 1000
    # points = $10.00, which is what the three purchases and the first $100 of dining add up to.
    assert cash(gas) + cash(dining) + cash(again) + Decimal("5.00") == Decimal("10.00")


def test_custom_cash_cycle_bonus_never_above_cap():
    # CITI_CUSTOM_CASH: $500 of groceries already at 5%. $896.35 of gas then overtakes
    # groceries, but the top category's 5% is still on $500, so the purchase earns 1x.
    state = state_with({field_name("citi-custom-cash", "top:groceries", CC_CYCLE): 50_000}, cycle_day=15)
    rec = ENGINE.recommend(tx("5541", "896.35", when="2026-11-20T17:00:00Z"), ["citi-custom-cash"], state=state)

    assert rec.category == "gas"
    assert cash(rec) == Decimal("8.96")
    assert "$500.00 billing-cycle cap was already reached ($500.00 spent in the top category)" in rec.reasoning


def test_custom_cash_not_top_loses_to_double_cash():
    # CITI_CUSTOM_CASH: $300 gas leads the cycle; $30 dining earns 1x = $0.30, and Double
    # Cash 2 points x 1.0 cent = $0.60 wins.
    state = state_with({field_name("citi-custom-cash", "top:gas", CC_CYCLE): 30_000}, cycle_day=15)
    rec = ENGINE.recommend(tx("5812", "30.00", when="2026-11-20T17:00:00Z"),
                           ["citi-custom-cash", "citi-double-cash"], state=state)
    assert card(rec) == "citi-double-cash"
    assert cash(rec) == Decimal("0.60")
    assert alternatives(rec) == [("citi-custom-cash", Decimal("0.30"))]
    # Double Cash has no cap, but the dining spend still goes on Custom Cash's tally only
    # when Custom Cash is the card used.
    assert rec.spend_updates == []


def test_custom_cash_cycle_cap_crossed():
    # CITI_CUSTOM_CASH: $450 of gas this cycle; $100 more: 50 x 5 + 50 x 1 = 300 points = $3.00.
    state = state_with({field_name("citi-custom-cash", "top:gas", CC_CYCLE): 45_000}, cycle_day=15)
    rec = ENGINE.recommend(tx("5541", "100.00", when="2026-11-20T17:00:00Z"), ["citi-custom-cash"], state=state)
    assert rec.rewards.amount == Decimal("300")
    assert cash(rec) == Decimal("3.00")
    assert "under the $500.00 billing-cycle cap" in rec.reasoning


def test_custom_cash_new_cycle_starts_fresh():
    # CITI_CUSTOM_CASH: the cycle starting November 15 does not see spend of the one starting
    # October 15. November 14 is still in the October cycle, where $300 of dining leads, so
    # $50 of gas earns 1x = $0.50; on November 15 the same purchase earns 5% = $2.50.
    state = state_with({field_name("citi-custom-cash", "top:dining", "cycle:2026-10-15"): 30_000}, cycle_day=15)
    old = ENGINE.recommend(tx("5541", "50.00", when="2026-11-14T17:00:00Z"), ["citi-custom-cash"], state=state)
    new = ENGINE.recommend(tx("5541", "50.00", when="2026-11-15T17:00:00Z"), ["citi-custom-cash"], state=state)
    assert cash(old) == Decimal("0.50")
    assert cash(new) == Decimal("2.50")


def test_cycle_and_period_keys():
    from datetime import date

    assert cycle_start(date(2026, 11, 14), 15) == date(2026, 10, 15)
    assert cycle_start(date(2026, 11, 15), 15) == date(2026, 11, 15)
    assert cycle_start(date(2026, 1, 5), 15) == date(2025, 12, 15)
    assert period_key("statement_cycle", date(2026, 11, 20), 15) == "cycle:2026-11-15"
    assert period_key("statement_cycle", date(2026, 11, 20), None) == "2026-11"
    assert period_key("calendar_quarter", date(2026, 12, 31)) == "2026Q4"
    assert period_key("calendar_month", date(2026, 2, 1)) == "2026-02"
    with pytest.raises(ValueError):
        period_key("fortnight", date(2026, 2, 1))


# --- merchant acceptance and exclusions ---------------------------------------

def test_costco_warehouse_takes_visa_only():
    # COSTCO_PAYMENT: U.S. warehouses take Visa only. Wallet: Amex Gold (Amex), Double Cash
    # (Mastercard), Freedom Unlimited (Visa). $200 at MCC 5300: Freedom Unlimited 1.5 x 200
    # = 300 points x 1.0 cent = $3.00.
    rec = ENGINE.recommend(tx("5300", "200.00", merchant="COSTCO WHSE #0042", merchant_country="US"),
                           ["amex-gold", "citi-double-cash", "chase-freedom-unlimited"])
    assert card(rec) == "chase-freedom-unlimited"
    assert cash(rec) == Decimal("3.00")
    assert rec.alternatives == []
    assert sorted(rec.passed_over) == [
        "Amex Gold: Costco U.S. warehouses and gas stations take Visa only",
        "Citi Double Cash: Costco U.S. warehouses and gas stations take Visa only",
    ]
    assert "Passed over" in rec.reasoning or "passed over" in rec.reasoning


def test_costco_with_unknown_country_still_visa_only():
    # COSTCO_PAYMENT: a bank export without a merchant country; Costco Gas (MCC 5542), $60.
    # Blue Cash Preferred (Amex) cannot be used; Active Cash 2% = $1.20.
    rec = ENGINE.recommend(tx("5542", "60.00", merchant="COSTCO GAS #0123"),
                           ["amex-blue-cash-preferred", "wells-fargo-active-cash"])
    assert card(rec) == "wells-fargo-active-cash"
    assert cash(rec) == Decimal("1.20")


def test_costco_without_a_visa_raises():
    with pytest.raises(NoUsableCardError) as caught:
        ENGINE.recommend(tx("5300", "80.00", merchant="COSTCO WHSE #0042"), ["amex-gold", "citi-double-cash"])
    message = str(caught.value)
    assert "COSTCO WHSE #0042" in message
    assert "take Visa only" in message
    assert isinstance(caught.value, ValueError)


def test_costco_com_takes_mastercard_not_amex():
    # COSTCO_PAYMENT: Costco.com takes Visa, Mastercard and Discover. $100: Double Cash
    # 200 points x 1.0 cent = $2.00; Amex Gold passed over.
    rec = ENGINE.recommend(tx("5964", "100.00", merchant="COSTCO.COM*ORDER"), ["amex-gold", "citi-double-cash"])
    assert card(rec) == "citi-double-cash"
    assert cash(rec) == Decimal("2.00")
    assert rec.passed_over == ["Amex Gold: Costco.com takes Visa, Mastercard and Discover, not American Express"]


def test_walmart_excluded_from_gold_supermarkets():
    # AMEX_GOLD: superstores are not U.S. supermarkets. $100 at Walmart (MCC 5411): Gold 1x =
    # 100 points x 2.0 = $2.00; Double Cash 200 x 1.0 = $2.00; equal, so the lower annual fee
    # wins: Double Cash ($0). Within a cent: confidence 0.95 - 0.10 = 0.85.
    rec = ENGINE.recommend(tx("5411", "100.00", merchant="WALMART SUPERCENTER #1"), ["amex-gold", "citi-double-cash"])
    assert card(rec) == "citi-double-cash"
    assert cash(rec) == Decimal("2.00")
    assert alternatives(rec) == [("amex-gold", Decimal("2.00"))]
    assert rec.confidence == 0.85
    assert rec.passed_over == ["Amex Gold: superstores are excluded from its 4x at U.S. supermarkets"]


def test_target_excluded_from_bcp_supermarkets():
    # AMEX_BCP: Target is a superstore, not a U.S. supermarket: $50 x 1% = $0.50.
    rec = ENGINE.recommend(tx("5411", "50.00", merchant="TARGET T-1234"), ["amex-blue-cash-preferred"])
    assert cash(rec) == Decimal("0.50")


def test_excluded_merchant_adds_no_cap_spend():
    # AMEX_BCP: a Walmart purchase earns no supermarket bonus, so it uses none of the cap.
    state = state_with()
    rec = ENGINE.recommend(tx("5411", "50.00", merchant="WALMART #1"), ["amex-blue-cash-preferred"], state=state)
    assert rec.spend_updates == []


# --- valuations and modes ------------------------------------------------------

def test_valuation_override_changes_winner():
    # AMEX_GOLD 4x at restaurants; Sapphire Preferred 3x dining
    # (https://creditcards.chase.com/rewards-credit-cards/sapphire/preferred).
    # Defaults: Gold 400 x 2.0 = $8.00 beats 300 x 2.05 = $6.15. Valuing Membership Rewards
    # at 1.0 cent: Gold $4.00, so Sapphire Preferred wins with $6.15.
    wallet = ["amex-gold", "chase-sapphire-preferred"]
    assert card(ENGINE.recommend(tx("5812", "100.00"), wallet)) == "amex-gold"
    rec = ENGINE.recommend(tx("5812", "100.00"), wallet, valuations={"Amex Membership Rewards": "1.0"})
    assert card(rec) == "chase-sapphire-preferred"
    assert cash(rec) == Decimal("6.15")
    assert alternatives(rec) == [("amex-gold", Decimal("4.00"))]


def test_cashback_mode_values_points_at_cash_floor():
    # Venture X 2 miles per dollar (https://www.capitalone.com/credit-cards/venture-x/) at
    # 1.85 cents = $3.70 on $100 beats Active Cash 2% = $2.00. In cash back mode miles are
    # worth their 1.0-cent floor: $2.00 each, and the lower annual fee wins: Active Cash.
    wallet = ["capital-one-venture-x", "wells-fargo-active-cash"]
    default = ENGINE.recommend(tx("5999", "100.00"), wallet)
    assert card(default) == "capital-one-venture-x"
    assert cash(default) == Decimal("3.70")
    rec = ENGINE.recommend(tx("5999", "100.00"), wallet, mode="cashback")
    assert card(rec) == "wells-fargo-active-cash"
    assert cash(rec) == Decimal("2.00")
    assert alternatives(rec) == [("capital-one-venture-x", Decimal("2.00"))]
    assert "cash back mode" in rec.reasoning


def test_program_mode_prefers_named_program():
    # Gold 4x at a supermarket = $8.00; Sapphire Preferred 1x = 100 x 2.05 = $2.05. With mode
    # program:Chase Ultimate Rewards the Sapphire is recommended and Gold is the alternative.
    wallet = ["amex-gold", "chase-sapphire-preferred"]
    rec = ENGINE.recommend(tx("5411", "100.00"), wallet, mode="program:Chase Ultimate Rewards")
    assert card(rec) == "chase-sapphire-preferred"
    assert cash(rec) == Decimal("2.05")
    assert alternatives(rec) == [("amex-gold", Decimal("8.00"))]


def test_program_mode_says_what_it_costs():
    """The mode, not a close call, made the choice: full confidence, and the reasoning names the cost."""
    wallet = ["amex-gold", "chase-sapphire-preferred"]
    rec = ENGINE.recommend(tx("5411", "100.00"), wallet, mode="program:Chase Ultimate Rewards")
    default = ENGINE.recommend(tx("5411", "100.00"), wallet)

    assert rec.confidence == default.confidence
    assert "the user's mode prefers Chase Ultimate Rewards, although Amex Gold would earn $5.95 more" in rec.reasoning


def test_close_call_lowers_confidence():
    # Active Cash and Double Cash both earn 2% ($2.00) on other purchases: a close call either way.
    wallet = ["wells-fargo-active-cash", "citi-double-cash"]
    close = ENGINE.recommend(tx("5999", "100.00"), wallet)
    clear = ENGINE.recommend(tx("5999", "100.00"), ["wells-fargo-active-cash"])

    assert cash(close) == Decimal("2.00")
    assert close.confidence == round(clear.confidence - 0.10, 2)


def test_program_mode_without_matching_card_falls_back():
    rec = ENGINE.recommend(tx("5411", "100.00"), ["amex-gold"], mode="program:Chase Ultimate Rewards")
    assert card(rec) == "amex-gold"
    assert cash(rec) == Decimal("8.00")
    assert "No card in the wallet earns Chase Ultimate Rewards" in rec.reasoning


def test_valuation_name_mode_rejected():
    # "Chase Ultimate Rewards (cash back)" is the valuation of Freedom points on their own. The
    # cards earn Chase Ultimate Rewards, so a mode naming the valuation could never prefer a card.
    with pytest.raises(InvalidModeError) as caught:
        ENGINE.check_mode("program:Chase Ultimate Rewards (cash back)")
    message = str(caught.value)
    assert "'program:Chase Ultimate Rewards (cash back)' names a valuation, not a program that cards earn" in message
    assert "(chase-freedom-unlimited, chase-freedom-flex)" in message
    assert "so use program:Chase Ultimate Rewards." in message
    assert "Known programs: Amex Membership Rewards, Capital One Miles, Chase Ultimate Rewards" in message


def test_every_valid_program_mode_prefers_a_card():
    # Each program that check_mode accepts is earned by some catalog card, and with that card
    # and Amex Gold in the wallet the program's card is recommended at a supermarket.
    programs = sorted({entry.program for entry in ENGINE.catalog.cards})
    for program in ENGINE.valuations.programs:
        if program not in programs:
            with pytest.raises(InvalidModeError):
                ENGINE.check_mode(f"program:{program}")
    for program in programs:
        earner = next(entry.card_id for entry in ENGINE.catalog.cards
                      if entry.program == program and entry.card_id != "amex-gold")
        rec = ENGINE.recommend(tx("5411", "100.00"), [earner, "amex-gold"], mode=f"program:{program}")
        if program != "Amex Membership Rewards":
            assert rec.recommended_card.card_id == earner, program
        assert "no card in the wallet earns" not in rec.reasoning.lower(), program


@pytest.mark.parametrize("mode", ["points", "program:", "program:Bogus Points", "CASH "])
def test_invalid_mode_is_rejected(mode):
    with pytest.raises(InvalidModeError) as caught:
        ENGINE.recommend(tx(), ["amex-gold"], mode=mode)
    assert repr(mode) in str(caught.value)


# --- foreign transactions ------------------------------------------------------

def test_foreign_currency_fee_flips_winner():
    # Sapphire Preferred 3x dining x 2.05 = $6.15, no foreign fee. Freedom Unlimited 3x dining
    # with a 3% foreign fee; its points pool with the Sapphire's, so 300 x 2.05 cents = $6.15
    # - $3.00 = $3.15. Alone it would be 300 x 1.0 - $3.00 = $0.00.
    rec = ENGINE.recommend(tx("5812", "100.00", currency="EUR"),
                           ["chase-freedom-unlimited", "chase-sapphire-preferred"])
    assert card(rec) == "chase-sapphire-preferred"
    assert cash(rec) == Decimal("6.15")
    assert alternatives(rec) == [("chase-freedom-unlimited", Decimal("3.15"))]
    alone = ENGINE.recommend(tx("5812", "100.00", currency="EUR"), ["chase-freedom-unlimited"])
    assert cash(alone) == Decimal("0.00")
    assert "after its 3% foreign transaction fee" in alone.reasoning


def test_foreign_merchant_in_dollars_pays_fee():
    # Double Cash 2 points x 1.0 cent - 3% fee = -$1.00 on $100 at a U.K. merchant billed in
    # USD; Venture X 2 x 1.85 = $3.70 with no fee.
    rec = ENGINE.recommend(tx("5999", "100.00", merchant_country="GB"),
                           ["citi-double-cash", "capital-one-venture-x"])
    assert card(rec) == "capital-one-venture-x"
    assert cash(rec) == Decimal("3.70")
    assert alternatives(rec) == [("citi-double-cash", Decimal("-1.00"))]
    assert rec.alternatives[0].note.endswith(", after its 3% foreign transaction fee")


def test_alternative_note_names_fee_when_capped():
    # Blue Cash Preferred's 6% is capped, so its note comes from the capped path. Abroad the
    # supermarket bonus does not apply (U.S. supermarkets only), and the 2.7% fee is named.
    state = SpendState()
    rec = ENGINE.recommend(tx("5411", "100.00", currency="EUR"),
                           ["capital-one-venture-x", "amex-blue-cash-preferred"], state=state)
    home = ENGINE.recommend(tx("5411", "100.00"), ["capital-one-venture-x", "amex-blue-cash-preferred"],
                            state=SpendState())

    assert alternatives(rec)[0][0] == "amex-blue-cash-preferred"
    assert rec.alternatives[0].note.endswith(", after its 2.7% foreign transaction fee")
    assert "foreign transaction fee" not in " ".join(alternative.note for alternative in home.alternatives)


def test_us_supermarket_bonus_not_abroad():
    # AMEX_BCP: "U.S. supermarkets" only; a Spanish supermarket in EUR earns 1% - 2.7% fee
    # = -1.7% = -$1.70 on $100, and uses none of the cap.
    state = state_with()
    rec = ENGINE.recommend(tx("5411", "100.00", currency="EUR", merchant_country="ES", merchant="MERCADONA"),
                           ["amex-blue-cash-preferred"], state=state)
    assert cash(rec) == Decimal("-1.70")
    assert rec.spend_updates == []


def test_tiny_foreign_purchase_not_negative_zero():
    # Active Cash 2% - 3% foreign fee on $0.01 = -$0.0001, which rounds to $0.00: written
    # "0.00", never "-0.00". Blue Cash Preferred 1% - 2.7% = -$0.00017 rounds to $0.00 too.
    wallet = ["wells-fargo-active-cash", "amex-blue-cash-preferred"]
    evaluation = ENGINE.evaluate(tx("5411", "0.01", merchant="Tesco", merchant_country="GB"), wallet)
    document = json.loads(evaluation.to_json())
    assert document["rewards"]["cash_value_usd"] == "0.00"
    assert document["rewards"]["effective_rate"] == "0.0000"
    assert document["alternatives"][0]["rewards"]["cash_value_usd"] == "0.00"
    assert document["alternatives"][0]["rewards"]["effective_rate"] == "0.0000"
    assert "$0.00 on $0.01" in document["reasoning"]
    assert "-0" not in document["reasoning"]


def test_capped_foreign_purchase_not_negative_zero():
    # The capped path (_valued, with spend state) rounds as the uncapped one: Blue Cash
    # Preferred abroad earns 1% - 2.7% fee = -$0.00017 on $0.01, written "0.00".
    rec = ENGINE.recommend(tx("5411", "0.01", merchant="Tesco", merchant_country="GB"),
                           ["amex-blue-cash-preferred"], state=state_with())
    assert str(rec.rewards.cash_value_usd) == "0.00"
    assert str(rec.rewards.effective_rate) == "0.0000"
    assert "$0.00 on $0.01" in rec.reasoning


def test_small_negative_rate_not_negative_zero():
    # Double Cash earns 2x and pays a 3% foreign fee. At 1.4975 cents a point it nets
    # 2 x 1.4975 - 3 = -0.005% of the purchase: -$0.0125 on $250.00, which rounds half even to
    # -$0.01. The effective rate -0.01 / 250 = -0.00004 rounds to 0.0000, written unsigned.
    rec = ENGINE.recommend(tx("5411", "250.00", merchant="Tesco", merchant_country="GB"), ["citi-double-cash"],
                           valuations={"Citi ThankYou Points (cash back)": "1.4975"})
    assert str(rec.rewards.cash_value_usd) == "-0.01"
    assert str(rec.rewards.effective_rate) == "0.0000"
    assert "-$0.01 on $250.00" in rec.reasoning


# --- whose spend counts ---------------------------------------------------------

def test_spend_counts_on_card_used():
    # Gold 4x at a supermarket = 400 x 2.0 = $8.00 beats BCP 6% = $6.00, but the user paid
    # with BCP, so the $100 counts on BCP's supermarket cap (AMEX_BCP).
    state = state_with()
    rec = ENGINE.recommend(tx("5411", "100.00", card_used="Blue Cash Preferred"),
                           ["amex-gold", "amex-blue-cash-preferred"], state=state)
    assert card(rec) == "amex-gold"
    assert rec.card_used == "Blue Cash Preferred"
    assert rec.spend_updates == [("amex-blue-cash-preferred|us-supermarkets|2026", 10_000)]


def test_unknown_card_used_counts_on_recommended():
    state = state_with()
    rec = ENGINE.recommend(tx("5411", "100.00", card_used="VISA ****1234"), ["amex-gold"], state=state)
    assert rec.spend_updates == [("amex-gold|us-supermarkets|2026", 10_000)]


def test_cash_like_purchase_adds_no_spend():
    state = state_with()
    rec = ENGINE.recommend(tx("6011", "100.00"), ["amex-blue-cash-preferred"], state=state)
    assert cash(rec) == Decimal("0.00")
    assert rec.spend_updates == []


def test_rewards_for_card_used():
    # AMEX_BCP: what BCP earns on $100 at a supermarket with $5,950 spent: $50 x 6% + $50 x 1% = $3.50.
    state = state_with({"amex-blue-cash-preferred|us-supermarkets|2026": 595_000})
    rewards = ENGINE.rewards_for(tx("5411", "100.00"), "amex-blue-cash-preferred", state=state)
    assert rewards.cash_value_usd == Decimal("3.50")
    # Reading does not spend.
    assert state.spent("u1", "amex-blue-cash-preferred|us-supermarkets|2026") == 595_000


def test_spend_fields_cover_wallet_caps():
    fields = ENGINE.spend_fields(tx("5411", "10.00"), ["amex-blue-cash-preferred", "citi-custom-cash"], cycle_day=15)
    assert "amex-blue-cash-preferred|us-supermarkets|2026" in fields
    assert "citi-custom-cash|top:gas|cycle:2026-04-15" in fields
    assert "citi-custom-cash|top:dining|cycle:2026-04-15" in fields


# --- properties ------------------------------------------------------------------

CARD_IDS = sorted(ENGINE.catalog.ids)
MCCS = sorted({mcc.mcc for mcc in iso18245.get_all_mccs()})
MERCHANTS = ["Some Merchant", "COSTCO WHSE #0042", "COSTCO.COM", "WALMART #1", "KROGER #1", "Amazon.com*X1"]


@settings(max_examples=300, deadline=None)
@given(
    wallet=st.lists(st.sampled_from(CARD_IDS), min_size=1, max_size=8),
    mcc=st.one_of(st.none(), st.sampled_from(MCCS)),
    cents=st.integers(min_value=1, max_value=2_000_000),
    merchant=st.sampled_from(MERCHANTS),
    country=st.sampled_from([None, "US", "GB"]),
    currency=st.sampled_from(["USD", "EUR"]),
    when=st.sampled_from(["2025-08-10T16:00:00Z", "2025-11-10T16:00:00Z", "2026-02-10T18:00:00Z", MAY_2026]),
    spent=st.integers(min_value=0, max_value=3_000_000),
    with_state=st.booleans(),
)
def test_no_alternative_beats_recommended(wallet, mcc, cents, merchant, country, currency, when, spent, with_state):
    transaction = tx(mcc, f"{cents / 100:.2f}", when=when, merchant=merchant,
                     merchant_country=country, currency=currency)
    state = None
    if with_state:
        state = state_with({name: spent for name in ENGINE.spend_fields(transaction, wallet)},
                           activations={"chase-freedom-flex": ["2025Q3", "2026Q1"]})
    rule = ENGINE._acceptance.match(merchant, transaction.mcc, country)
    try:
        rec = ENGINE.recommend(transaction, wallet, state=state)
    except NoUsableCardError:
        assert rule is not None
        assert all(ENGINE.catalog.get(c).network not in rule[1].accepts for c in wallet)
        return
    for alternative in rec.alternatives:
        assert alternative.rewards.cash_value_usd <= rec.rewards.cash_value_usd
    if rule is not None:
        assert ENGINE.catalog.get(card(rec)).network in rule[1].accepts
        for alternative in rec.alternatives:
            assert ENGINE.catalog.get(alternative.card.card_id).network in rule[1].accepts


# --- Freedom Flex Q1 2026: the quarter's 5% stacks with the everyday 3% on dining ---------

# The Points Guy, "Activate Chase Freedom Q1 categories now" (Dec. 15, 2025): a Chase
# representative confirmed that the Q1 2026 5% on dining stacks with the Freedom Flex's
# everyday dining bonus, 7% in all, on up to $1,500 of combined Q1 purchases. The everyday 3%
# on dining (CHASE_FLEX) has no cap, so dining above the $1,500 earns 3%. Freedom Flex points
# are worth 1.0 cent each without a Sapphire card in the wallet.
FLEX_Q1_2026_STACKING = "https://thepointsguy.com/credit-cards/activate-chase-freedom-5x-earnings/"
FLEX_Q1 = "chase-freedom-flex|rotating|2026Q1"
FEBRUARY_2026 = "2026-02-10T18:00:00Z"


def flex_q1_state(spent_cents: int = 0) -> SpendState:
    return state_with({FLEX_Q1: spent_cents} if spent_cents else None,
                      activations={"chase-freedom-flex": ["2026Q1"]})


def test_flex_q1_2026_dining_stacks_to_7_percent():
    # FLEX_Q1_2026_STACKING: $100.00 at a restaurant (MCC 5812), Q1 2026 activated:
    # 1% base + 4% quarterly bonus + 2% dining bonus = 7x = 700 points x 1.0 cent = $7.00,
    # ahead of Double Cash's 200 points = $2.00. The purchase counts against the quarterly cap.
    state = flex_q1_state()
    rec = ENGINE.recommend(tx("5812", "100.00", when=FEBRUARY_2026, merchant="Olive Garden"),
                           ["chase-freedom-flex", "citi-double-cash"], state=state)
    assert card(rec) == "chase-freedom-flex"
    assert rec.rewards.amount == Decimal("700")
    assert cash(rec) == Decimal("7.00")
    assert rec.rewards.effective_rate == Decimal("0.0700")
    assert alternatives(rec) == [("citi-double-cash", Decimal("2.00"))]
    assert "7x Ultimate Rewards points" in rec.reasoning
    assert "(5x quarterly category stacked with 3x on dining)" in rec.reasoning
    assert rec.spend_updates == [(FLEX_Q1, 10_000)]
    assert state.spent("u1", FLEX_Q1) == 10_000


def test_flex_q1_2026_dining_without_state():
    # FLEX_Q1_2026_STACKING: without spend state activation is assumed: $100.00 x 7% = $7.00,
    # confidence 0.95 by MCC - 0.10 for the assumption = 0.85. rewards_for gives the same value.
    dinner = tx("5812", "100.00", when=FEBRUARY_2026, merchant="Olive Garden")
    rec = ENGINE.recommend(dinner, ["chase-freedom-flex", "citi-double-cash"])
    assert card(rec) == "chase-freedom-flex"
    assert cash(rec) == Decimal("7.00")
    assert rec.confidence == 0.85
    assert "assumes the quarter's 5% categories are activated" in rec.reasoning
    assert rec.spend_updates == []
    assert ENGINE.rewards_for(dinner, "chase-freedom-flex").cash_value_usd == Decimal("7.00")


def test_flex_q1_2026_dining_crosses_cap():
    # FLEX_Q1_2026_STACKING: $1,400.00 of Q1 purchases are already counted. A $300.00 dinner
    # earns $100.00 x 7 = 700 points + $200.00 x 3 (the everyday dining rate, not the 1% base)
    # = 600 points, so 1,300 points x 1.0 cent = $13.00.
    state = flex_q1_state(140_000)
    rec = ENGINE.recommend(tx("5812", "300.00", when=FEBRUARY_2026, merchant="Olive Garden"),
                           ["chase-freedom-flex"], state=state)
    assert rec.rewards.amount == Decimal("1300")
    assert cash(rec) == Decimal("13.00")
    assert "$100.00 of the purchase was under the $1,500.00 quarterly cap ($1,400.00 already spent)" \
        in rec.reasoning
    assert "the other $200.00 earns 3x Ultimate Rewards points on dining" in rec.reasoning
    assert rec.spend_updates == [(FLEX_Q1, 30_000)]
    assert state.spent("u1", FLEX_Q1) == 170_000


def test_flex_q1_2026_dining_after_cap_used():
    # FLEX_Q1_2026_STACKING: the $1,500 is used up, so a $45.67 dinner earns the everyday 3x:
    # 137.01 points x 1.0 cent = $1.37 (half-even), still ahead of Double Cash's $0.91.
    state = flex_q1_state(150_000)
    rec = ENGINE.recommend(tx("5812", "45.67", when=FEBRUARY_2026, merchant="Olive Garden"),
                           ["chase-freedom-flex", "citi-double-cash"], state=state)
    assert card(rec) == "chase-freedom-flex"
    assert rec.rewards.amount == Decimal("137.01")
    assert cash(rec) == Decimal("1.37")
    assert alternatives(rec) == [("citi-double-cash", Decimal("0.91"))]
    assert rec.spend_updates == [(FLEX_Q1, 4_567)]


def test_flex_q1_2026_dining_not_activated():
    # FLEX_Q1_2026_STACKING: the wallet has not activated 2026Q1, so dining earns the everyday
    # 3x: $100.00 = 300 points = $3.00, and no quarterly cap spend is added.
    rec = ENGINE.recommend(tx("5812", "100.00", when=FEBRUARY_2026, merchant="Olive Garden"),
                           ["chase-freedom-flex"], state=state_with())
    assert cash(rec) == Decimal("3.00")
    assert rec.passed_over == ["Freedom Flex: its 2026Q1 5% categories are not activated in this wallet"]
    assert "stacked" not in rec.reasoning
    assert rec.spend_updates == []


def test_flex_q2_2026_dining_has_no_quarter():
    # CHASE_FLEX: no April to June 2026 quarter is transcribed, so $100.00 of dining on
    # 2026-04-01 00:30 EDT (04:30 UTC) earns the everyday 3x = $3.00. At 23:30 EDT on March 31
    # (03:30 UTC April 1) it is still Q1: 7x = $7.00.
    activations = {"chase-freedom-flex": ["2026Q1", "2026Q2"]}
    march = ENGINE.recommend(tx("5812", "100.00", when="2026-04-01T03:30:00Z"), ["chase-freedom-flex"],
                             state=state_with(activations=activations))
    april = ENGINE.recommend(tx("5812", "100.00", when="2026-04-01T04:30:00Z"), ["chase-freedom-flex"],
                             state=state_with(activations=activations))
    assert cash(march) == Decimal("7.00")
    assert march.spend_updates == [(FLEX_Q1, 10_000)]
    assert cash(april) == Decimal("3.00")
    assert april.spend_updates == []


def test_flex_q1_2026_cruise_not_stacked():
    # FLEX_Q1_2026_STACKING: Norwegian Cruise Line is a Q1 2026 category with no everyday rule
    # behind it (cruise lines, MCC 4411). $1,000.00 earns 5x = 5,000 points = $50.00.
    state = flex_q1_state()
    rec = ENGINE.recommend(tx("4411", "1000.00", when=FEBRUARY_2026, merchant="NORWEGIAN CRUISE LINE"),
                           ["chase-freedom-flex"], state=state)
    assert rec.rewards.amount == Decimal("5000")
    assert cash(rec) == Decimal("50.00")
    assert "stacked" not in rec.reasoning
    assert rec.spend_updates == [(FLEX_Q1, 100_000)]


def test_flex_q1_2026_drugstore_not_stacked():
    # CHASE_FLEX: drugstores earn 3x every day but are not a Q1 2026 category, so $50.00 at a
    # drugstore (MCC 5912) earns 150 points = $1.50 and adds nothing to the quarterly cap.
    rec = ENGINE.recommend(tx("5912", "50.00", when=FEBRUARY_2026, merchant="CVS Pharmacy"),
                           ["chase-freedom-flex"], state=flex_q1_state())
    assert cash(rec) == Decimal("1.50")
    assert rec.spend_updates == []


def test_flex_q1_2026_dining_with_sapphire():
    # FLEX_Q1_2026_STACKING, with a Sapphire Preferred in the wallet the Freedom Flex points are
    # Ultimate Rewards points at 2.05 cents: 700 points x 2.05 = $14.35, ahead of the Sapphire
    # Preferred's 3x on dining = 300 x 2.05 = $6.15.
    rec = ENGINE.recommend(tx("5812", "100.00", when=FEBRUARY_2026, merchant="Olive Garden"),
                           ["chase-freedom-flex", "chase-sapphire-preferred"], state=flex_q1_state())
    assert card(rec) == "chase-freedom-flex"
    assert cash(rec) == Decimal("14.35")
    assert alternatives(rec) == [("chase-sapphire-preferred", Decimal("6.15"))]


def bundled_catalog_data() -> dict:
    return json.loads(resources.files("rewardpilot").joinpath("data", "cards.json").read_text(encoding="utf-8"))


def flex_rule(data: dict, rule_id: str) -> dict:
    flex = next(entry for entry in data["cards"] if entry["card_id"] == "chase-freedom-flex")
    return next(rule for rule in flex["earn"] if rule["rule_id"] == rule_id)


def flex_quarter(data: dict, quarter: str) -> dict:
    return next(entry for entry in flex_rule(data, "rotating")["calendar"] if entry["quarter"] == quarter)


def test_stacking_flag_is_in_ranking_cache_key():
    # Two Freedom Flex quarters with dining, and only Q1 2026 stacks. Both rank with the same
    # wallet, category and rotating match, so only the stacking set distinguishes the cached
    # rankings. May 2025 dining: the 5% beats the everyday 3% = $5.00. February 2026: $7.00.
    data = bundled_catalog_data()
    flex_quarter(data, "2025-Q2")["categories"] = ["dining"]
    engine = RulesEngine(Catalog.model_validate(data), default_valuations(), default_categories())

    may = tx("5812", "100.00", when="2025-05-10T16:00:00Z")
    february = tx("5812", "100.00", when=FEBRUARY_2026)
    assert cash(engine.recommend(may, ["chase-freedom-flex"])) == Decimal("5.00")
    assert cash(engine.recommend(february, ["chase-freedom-flex"])) == Decimal("7.00")
    assert cash(engine.recommend(may, ["chase-freedom-flex"])) == Decimal("5.00")


def test_stacking_flag_needs_source():
    data = bundled_catalog_data()
    flex_quarter(data, "2026-Q1")["stacking_source"] = "  "
    with pytest.raises(ValidationError) as raised:
        Catalog.model_validate(data)
    message = str(raised.value)
    assert "quarter 2026-Q1 sets stacks_with_category_rules but has no stacking_source" in message
    position = [entry["card_id"] for entry in data["cards"]].index("chase-freedom-flex")
    assert f"cards.{position}.earn.0.calendar.4" in message


def test_stacking_flag_must_be_boolean():
    data = bundled_catalog_data()
    flex_quarter(data, "2026-Q1")["stacks_with_category_rules"] = "yes"
    with pytest.raises(ValidationError) as raised:
        Catalog.model_validate(data)
    assert "stacks_with_category_rules" in str(raised.value)
    assert "Input should be a valid boolean" in str(raised.value)


def test_calendar_only_on_rotating_rules():
    data = bundled_catalog_data()
    flex_rule(data, "dining")["calendar"] = [flex_quarter(data, "2026-Q1")]
    with pytest.raises(ValidationError) as raised:
        Catalog.model_validate(data)
    assert "chase-freedom-flex: rule dining has a calendar but kind 'category'" in str(raised.value)
