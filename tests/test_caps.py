"""Cap state in Redis: loading a batch, applying spend once, and consumers racing on one user.

Expected values come from Amex Blue Cash Preferred's published terms
(https://www.americanexpress.com/us/credit-cards/card/blue-cash-preferred/):
6% at U.S. supermarkets on up to $6,000 a calendar year, then 1%.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from rewardpilot import caps, wallets
from rewardpilot.caps import SettleOutcome
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction

ENGINE = RulesEngine.default()
BCP = "amex-blue-cash-preferred"
BCP_FIELD = "amex-blue-cash-preferred|us-supermarkets|2026"
MAX_ATTEMPTS = 200


def grocery(n: int, dollars: int, user: str = "u1") -> Transaction:
    return Transaction(transaction_id=f"t{n}", user_id=user, merchant="KROGER #512", amount_usd=f"{dollars}.00",
                       mcc="5411", timestamp="2026-05-10T16:00:00Z")


@pytest.fixture
async def aclient(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_load_spend_one_round_trip_per_batch(aclient, sync_client, keys):
    sync_client.hset(keys.cap_spend("u1"), mapping={BCP_FIELD: 590_000, "other|x|2026": 5})
    sync_client.hset(keys.cap_spend("u2"), mapping={BCP_FIELD: 100})
    state = await caps.load_spend(aclient, keys, {"u1": [BCP_FIELD, "missing|x|2026"], "u2": [BCP_FIELD], "u3": []})
    assert state.spent("u1", BCP_FIELD) == 590_000
    assert state.spent("u1", "missing|x|2026") == 0
    assert "other|x|2026" not in state.user("u1").spend
    assert state.spent("u2", BCP_FIELD) == 100
    assert state.spent("u3", BCP_FIELD) == 0


async def test_load_spend_with_no_fields_sends_nothing(aclient, keys):
    state = await caps.load_spend(aclient, keys, {})
    assert state.users == {}


async def test_recommend_then_apply_round_trip(aclient, sync_client, keys):
    # $5,900 spent: $100 earns 6% = $6.00; after applying, the next $100 earns 1% = $1.00.
    sync_client.hset(keys.cap_spend("u1"), BCP_FIELD, 590_000)
    first = grocery(1, 100)
    fields = ENGINE.spend_fields(first, [BCP])
    state = await caps.load_spend(aclient, keys, {"u1": fields})
    rec = ENGINE.recommend(first, [BCP], state=state)
    assert rec.rewards.cash_value_usd == Decimal("6.00")
    await caps.apply_spend_updates(aclient, keys, {"u1": rec.spend_updates})
    assert caps.read_spend(sync_client, keys, "u1")[BCP_FIELD] == 600_000

    state = await caps.load_spend(aclient, keys, {"u1": fields})
    again = ENGINE.recommend(grocery(2, 100), [BCP], state=state)
    assert again.rewards.cash_value_usd == Decimal("1.00")


async def test_settle_spend_counts_a_redelivery_once(aclient, sync_client, keys):
    marker = f"{keys.prefix}test-marker:t1"
    updates = [(BCP_FIELD, 10_000)]
    first = await caps.settle_spend(aclient, keys, "u1", marker, {BCP_FIELD: 0}, updates)
    second = await caps.settle_spend(aclient, keys, "u1", marker, {BCP_FIELD: 0}, updates)
    assert first is SettleOutcome.APPLIED
    assert second is SettleOutcome.DUPLICATE
    assert caps.read_spend(sync_client, keys, "u1") == {BCP_FIELD: 10_000}


async def test_settle_spend_rejects_stale_read(aclient, sync_client, keys):
    # Two consumers both loaded $5,950 of spend; the first to settle wins, the second
    # gets a conflict and changes nothing.
    sync_client.hset(keys.cap_spend("u1"), BCP_FIELD, 595_000)
    loaded = {BCP_FIELD: 595_000}
    one = await caps.settle_spend(aclient, keys, "u1", f"{keys.prefix}m:t1", loaded, [(BCP_FIELD, 10_000)])
    two = await caps.settle_spend(aclient, keys, "u1", f"{keys.prefix}m:t2", loaded, [(BCP_FIELD, 10_000)])
    assert one is SettleOutcome.APPLIED
    assert two is SettleOutcome.CONFLICT
    assert caps.read_spend(sync_client, keys, "u1")[BCP_FIELD] == 605_000
    assert not sync_client.exists(f"{keys.prefix}m:t2")


async def _consume(aclient, keys, queue: asyncio.Queue, wallet, earned: list[Decimal]) -> int:
    """A stand-in consumer: load, recommend, settle; reload and retry on a conflict. Returns conflicts seen."""
    conflicts = 0
    while True:
        try:
            transaction = queue.get_nowait()
        except asyncio.QueueEmpty:
            return conflicts
        for _ in range(MAX_ATTEMPTS):
            fields = ENGINE.spend_fields(transaction, wallet)
            state = await caps.load_spend(aclient, keys, {transaction.user_id: fields})
            loaded = {name: state.spent(transaction.user_id, name) for name in fields}
            rec = ENGINE.recommend(transaction, wallet, state=state)
            outcome = await caps.settle_spend(
                aclient, keys, transaction.user_id, f"{keys.prefix}m:{transaction.transaction_id}",
                loaded, rec.spend_updates,
            )
            if outcome is SettleOutcome.CONFLICT:
                conflicts += 1
                await asyncio.sleep(0)
                continue
            if outcome is SettleOutcome.APPLIED:
                earned.append(rec.rewards.cash_value_usd)
            break
        else:
            raise AssertionError(f"{transaction.transaction_id} still conflicting after {MAX_ATTEMPTS} attempts")


async def _run(aclient, keys, transactions, consumers: int) -> tuple[Decimal, int]:
    queue: asyncio.Queue = asyncio.Queue()
    for transaction in transactions:
        queue.put_nowait(transaction)
    earned: list[Decimal] = []
    conflicts = await asyncio.gather(*(_consume(aclient, keys, queue, [BCP], earned) for _ in range(consumers)))
    assert len(earned) == len(transactions)
    return sum(earned, Decimal("0")), sum(conflicts)


async def test_four_consumers_match_one(aclient, sync_client, keys):
    # Forty purchases of $200 = $8,000 on one user's Blue Cash Preferred cross the $6,000 cap:
    # $6,000 x 6% = $360.00 + $2,000 x 1% = $20.00 = $380.00, in any order and with any
    # number of consumers.
    transactions = [grocery(n, 200) for n in range(40)]
    one_keys = keys.__class__(prefix=f"{keys.prefix}one:")
    four_keys = keys.__class__(prefix=f"{keys.prefix}four:")

    alone, _ = await _run(aclient, one_keys, transactions, consumers=1)
    together, conflicts = await _run(aclient, four_keys, transactions, consumers=4)

    assert alone == Decimal("380.00")
    assert together == Decimal("380.00")
    assert caps.read_spend(sync_client, four_keys, "u1") == {BCP_FIELD: 800_000}


async def test_unguarded_race_would_double_spend(aclient, keys):
    # Without the check, two consumers that both loaded $5,900 each earn 6% on a $100
    # purchase: $12.00 together, though only $100 of room was left ($6.00 + $1.00 = $7.00).
    await caps.apply_spend_updates(aclient, keys, {"u1": [(BCP_FIELD, 590_000)]})
    first, second = grocery(1, 100), grocery(2, 100)
    fields = ENGINE.spend_fields(first, [BCP])
    state_a = await caps.load_spend(aclient, keys, {"u1": fields})
    state_b = await caps.load_spend(aclient, keys, {"u1": fields})
    rec_a = ENGINE.recommend(first, [BCP], state=state_a)
    rec_b = ENGINE.recommend(second, [BCP], state=state_b)
    assert rec_a.rewards.cash_value_usd + rec_b.rewards.cash_value_usd == Decimal("12.00")
    # The guarded path turns the second into a conflict, and its retry earns $1.00.
    loaded = {BCP_FIELD: 590_000}
    assert await caps.settle_spend(aclient, keys, "u1", f"{keys.prefix}m:t1", loaded,
                                   rec_a.spend_updates) is SettleOutcome.APPLIED
    assert await caps.settle_spend(aclient, keys, "u1", f"{keys.prefix}m:t2", loaded,
                                   rec_b.spend_updates) is SettleOutcome.CONFLICT
    state_b = await caps.load_spend(aclient, keys, {"u1": fields})
    assert ENGINE.recommend(second, [BCP], state=state_b).rewards.cash_value_usd == Decimal("1.00")


async def test_valuation_overrides_round_trip(aclient, sync_client, keys):
    table = ENGINE.valuations
    assert caps.set_valuation(sync_client, keys, "u1", "Amex Membership Rewards", "1.5", table) == "1.5"
    assert caps.get_valuations(sync_client, keys, "u1") == {"Amex Membership Rewards": "1.5"}
    fetched = await caps.fetch_valuations(aclient, keys, ["u1", "u2"])
    assert fetched == {"u1": {"Amex Membership Rewards": "1.5"}, "u2": {}}
    # Gold 4x at a supermarket: 400 points x 1.5 cents = $6.00 on $100.
    rec = ENGINE.recommend(grocery(1, 100), ["amex-gold"], valuations=fetched["u1"])
    assert rec.rewards.cash_value_usd == Decimal("6.00")


@pytest.mark.parametrize("program, cents, expected", [
    ("Bogus Points", "1.0", "no valuation program 'Bogus Points'"),
    ("Amex Membership Rewards", "abc", "must be a number of cents"),
    ("Amex Membership Rewards", "101", "between 0 and 100"),
    ("cash back", "5", "always worth its face value"),
])
def test_bad_valuation_rejected(sync_client, keys, program, cents, expected):
    with pytest.raises(ValueError) as caught:
        caps.set_valuation(sync_client, keys, "u1", program, cents, ENGINE.valuations)
    assert expected in str(caught.value)
    assert caps.get_valuations(sync_client, keys, "u1") == {}


def test_wallet_settings_round_trip(sync_client, keys):
    catalog = ENGINE.catalog
    wallets.set_wallet(sync_client, keys, "u1", ["cff", "citi-custom-cash"], catalog, cycle_day=15, mode="cashback")
    assert wallets.activate_quarter(sync_client, keys, "u1", "chase-freedom-flex", "2025-q3", catalog) == "2025Q3"
    # Replacing the cards keeps the activations, the cycle day and the mode.
    wallets.set_wallet(sync_client, keys, "u1", ["cff", "citi-custom-cash", "amex-gold"], catalog)
    record = wallets.get_wallet_record(sync_client, keys, "u1")
    assert record.cards == ["chase-freedom-flex", "citi-custom-cash", "amex-gold"]
    assert record.cycle_day == 15
    assert record.mode == "cashback"
    assert record.activations == {"chase-freedom-flex": ["2025Q3"]}
    assert wallets.get_wallet(sync_client, keys, "u1") == record.cards


@pytest.mark.parametrize("card, quarter, expected", [
    ("amex-gold", "2025Q3", "has no rotating quarterly categories"),
    ("discover-it-cash-back", "2025Q3", "does not hold discover-it-cash-back"),
    ("chase-freedom-flex", "2025Q5", "write it like 2026Q4"),
])
def test_bad_activation_rejected(sync_client, keys, card, quarter, expected):
    wallets.set_wallet(sync_client, keys, "u1", ["cff", "amex-gold"], ENGINE.catalog)
    with pytest.raises(ValueError) as caught:
        wallets.activate_quarter(sync_client, keys, "u1", card, quarter, ENGINE.catalog)
    assert expected in str(caught.value)


@pytest.mark.parametrize("day", ["0", "29", "x", "-1"])
def test_bad_cycle_day_rejected(sync_client, keys, day):
    with pytest.raises(ValueError) as caught:
        wallets.set_wallet(sync_client, keys, "u1", ["amex-gold"], ENGINE.catalog, cycle_day=day)
    assert repr(day) in str(caught.value)
    assert wallets.get_wallet(sync_client, keys, "u1") is None


def test_unreadable_wallet_settings_keep_cards(sync_client, keys):
    sync_client.set(keys.wallet("u1"), '{"cards": ["amex-gold"], "cycle_day": 40, "activations": 3}')
    record = wallets.get_wallet_record(sync_client, keys, "u1")
    assert record.cards == ["amex-gold"]
    assert record.cycle_day is None
    assert record.activations == {}
