"""Cap state through the real consumer pool: crossing a cap, redelivery, racing consumers, replays.

Expected values are worked by hand from published card terms:

* Amex Blue Cash Preferred
  (https://www.americanexpress.com/us/credit-cards/card/blue-cash-preferred/):
  6% at U.S. supermarkets on up to $6,000 a calendar year, then 1%.
* Amex Gold (https://www.americanexpress.com/us/credit-cards/card/gold-card/):
  4 Membership Rewards points per dollar at U.S. supermarkets. The catalog
  values a point at 2.0 cents (The Points Guy, January 2026) and at 1.0 cent
  in cash-back mode (Pay with Points), so $100 there is worth $8.00, or $4.00
  in cash-back mode, against $6.00 on Blue Cash Preferred.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import redis
import redis.asyncio as aioredis

from consumer.build import partitioned
from consumer.pool import MAX_CONFLICT_ROUNDS, ConsumerPool
from consumer.recommenders import InProcessRecommender
from consumer.settings import ConsumerSettings
from consumer.settle import Settler
from consumer.transports import Delivery
from producer import Producer
from rewardpilot import caps, wallets
from rewardpilot.engine import RulesEngine
from rewardpilot.engine.state import SpendState
from rewardpilot.models import Transaction
from rewardpilot.replay import replay_async
from rewardpilot.results import read_results

ENGINE = RulesEngine.default()
BCP = "amex-blue-cash-preferred"
GOLD = "amex-gold"
BCP_FIELD = "amex-blue-cash-preferred|us-supermarkets|2026"
START = datetime(2026, 5, 4, 16, 0, tzinfo=timezone.utc)


def groceries(dollars: list[int], user: str = "u1", prefix: str = "t") -> list[Transaction]:
    return [
        Transaction(transaction_id=f"{prefix}{index:03d}", user_id=user, merchant="KROGER #512",
                    amount_usd=f"{amount}.00", mcc="5411", timestamp=START + timedelta(minutes=index))
        for index, amount in enumerate(dollars)
    ]


def publish(client: redis.Redis, keys, items, partitions: int = 1) -> None:
    Producer(client, keys, max_backlog=None, partitions=partitions).publish_many(items)


def settings(keys, **overrides) -> ConsumerSettings:
    values = dict(keys=keys, workers=1, batch_size=3, block_ms=50, drain=True,
                  visibility_timeout_ms=1000, claim_interval_seconds=0.2, shutdown_grace_seconds=2)
    values.update(overrides)
    return ConsumerSettings(**values)


async def drain_pools(url: str, base: ConsumerSettings, names: list[str]) -> list:
    """Run one pool per name on ``base`` until every pool has drained; return their stats."""
    clients, pools = [], []
    for name in names:
        client = aioredis.Redis.from_url(url)
        options = dict(vars(base), consumer=name)
        pool_settings = ConsumerSettings(**options)
        transport = None
        if pool_settings.partitions > 1:
            pool_settings, transport = partitioned(client, pool_settings)
        clients.append(client)
        pools.append(ConsumerPool(client, pool_settings, transport=transport))
    try:
        return await asyncio.wait_for(asyncio.gather(*(pool.run() for pool in pools)), timeout=60)
    finally:
        for client in clients:
            await client.aclose()


def earned(client: redis.Redis, stream: str) -> Decimal:
    return sum((result.rewards.cash_value_usd for result in read_results(client, stream)), Decimal("0"))


def pending(client: redis.Redis, keys, run: str = "live") -> int:
    return client.xpending(keys.transactions, keys.group(run))["pending"]


# Crossing the cap


async def test_pool_crosses_cap_split(redis_url, keys, sync_client):
    # $1,000 x 5 = $5,000 earns 6% = $300.00. The $1,500 purchase crosses: $1,000 at 6% = $60.00
    # and $500 at 1% = $5.00. Two more $500 purchases earn 1% = $5.00 each.
    # Total $300 + $65 + $10 = $375.00 on $7,500.00 of spend.
    wallets.set_wallet(sync_client, keys, "u1", [BCP], ENGINE.catalog)
    publish(sync_client, keys, groceries([1000] * 5 + [1500, 500, 500]))

    [stats] = await drain_pools(redis_url, settings(keys), ["solo"])

    results = {result.transaction_id: result for result in read_results(sync_client, keys.results())}
    assert stats.results == 8
    assert earned(sync_client, keys.results()) == Decimal("375.00")
    assert results["t005"].rewards.cash_value_usd == Decimal("65.00")
    assert ("$1,000.00 of the purchase was under the $6,000.00 calendar-year cap "
            "($5,000.00 already spent), so the other $500.00 earns") in results["t005"].reasoning
    assert results["t006"].rewards.cash_value_usd == Decimal("5.00")
    assert caps.read_spend(sync_client, keys, "u1") == {BCP_FIELD: 750_000}
    assert pending(sync_client, keys) == 0


async def test_catalog_user_keeps_no_cap_state(redis_url, keys, sync_client):
    # A user without a wallet gets the best card in the catalog, which they may not have.
    publish(sync_client, keys, groceries([100, 100], user="nowallet"))

    await drain_pools(redis_url, settings(keys), ["solo"])

    results = list(read_results(sync_client, keys.results()))
    assert [result.wallet_source for result in results] == ["catalog", "catalog"]
    assert [result.spend_updates for result in results] == [[], []]
    assert caps.read_spend(sync_client, keys, "nowallet") == {}


# Redelivery and the settle script's guard


async def test_redelivered_batch_counts_once(redis_url, keys, sync_client):
    wallets.set_wallet(sync_client, keys, "u1", [BCP], ENGINE.catalog)
    publish(sync_client, keys, groceries([400] * 5))
    sync_client.xgroup_create(keys.transactions, keys.group(), id="0")
    entries = sync_client.xreadgroup(keys.group(), "c1", {keys.transactions: ">"}, count=5)[0][1]
    deliveries = [Delivery(entry_id, fields) for entry_id, fields in entries]

    client = aioredis.Redis.from_url(redis_url)
    pool = ConsumerPool(client, settings(keys))
    try:
        await pool.handle(deliveries)
        # The same entries again, as after a crash between settle and the next read.
        await pool.handle(deliveries)
    finally:
        await client.aclose()

    assert pool.stats.results == 5
    assert pool.stats.duplicates == 5
    assert sync_client.xlen(keys.results()) == 5
    assert caps.read_spend(sync_client, keys, "u1") == {BCP_FIELD: 200_000}
    assert pending(sync_client, keys) == 0


async def test_settle_stale_spend_is_conflict(redis_url, keys, sync_client):
    # Both u1 results read $5,900 of spend, but another consumer has since recorded $5,950.
    # Neither is written nor acknowledged (the second is held back to keep u1's order);
    # u2's result goes through.
    sync_client.hset(keys.cap_spend("u1"), BCP_FIELD, 595_000)
    publish(sync_client, keys, groceries([100, 100]) + groceries([100], user="u2", prefix="v"))
    sync_client.xgroup_create(keys.transactions, keys.group(), id="0")
    entries = [entry_id for entry_id, _ in
               sync_client.xreadgroup(keys.group(), "c1", {keys.transactions: ">"}, count=3)[0][1]]

    state = SpendState()
    state.add("u1", BCP_FIELD, 590_000)
    first, second = groceries([100, 100])
    other = groceries([100], user="u2", prefix="v")[0]
    loaded_first = {BCP_FIELD: state.spent("u1", BCP_FIELD)}
    rec_first = ENGINE.recommend(first, [BCP], state=state)
    loaded_second = {BCP_FIELD: state.spent("u1", BCP_FIELD)}
    rec_second = ENGINE.recommend(second, [BCP], state=state)
    rec_other = ENGINE.recommend(other, [BCP], state=state)

    client = aioredis.Redis.from_url(redis_url)
    try:
        settler = Settler(client, keys, run="live", group=keys.group(), marker_ttl_seconds=60)
        counts = await settler.settle(
            [(entries[0], rec_first), (entries[1], rec_second), (entries[2], rec_other)], [],
            checks={entries[0]: loaded_first, entries[1]: loaded_second, entries[2]: {BCP_FIELD: 0}},
        )
    finally:
        await client.aclose()

    assert counts.conflicts == entries[:2]
    assert counts.written == 1
    assert caps.read_spend(sync_client, keys, "u1") == {BCP_FIELD: 595_000}
    assert caps.read_spend(sync_client, keys, "u2") == {BCP_FIELD: 10_000}
    assert [result.transaction_id for result in read_results(sync_client, keys.results())] == ["v000"]
    assert pending(sync_client, keys) == 2
    assert not sync_client.exists(keys.result_marker("live", "t000"))


class SpendsMeanwhile:
    """The in-process engine, with another consumer recording $50 of u1's spend before each of the first ``times`` calls."""

    name = "in-process"

    def __init__(self, url: str, keys, times: int):
        self.inner = InProcessRecommender(ENGINE)
        self.engine = ENGINE
        self.client = redis.Redis.from_url(url)
        self.keys = keys
        self.times = times
        self.calls = 0

    async def recommend(self, items):
        self.calls += 1
        if self.calls <= self.times:
            self.client.hincrby(self.keys.cap_spend("u1"), BCP_FIELD, 5_000)
        return await self.inner.recommend(items)

    async def aclose(self) -> None:
        self.client.close()


async def handle_once(url: str, keys, sync_client, recommender) -> ConsumerPool:
    sync_client.xgroup_create(keys.transactions, keys.group(), id="0")
    entries = sync_client.xreadgroup(keys.group(), "c1", {keys.transactions: ">"}, count=10)[0][1]
    client = aioredis.Redis.from_url(url)
    pool = ConsumerPool(client, settings(keys), recommender)
    try:
        await pool.handle([Delivery(entry_id, fields) for entry_id, fields in entries])
    finally:
        await recommender.aclose()
        await client.aclose()
    return pool


async def test_pool_conflict_recommends_again(redis_url, keys, sync_client):
    # $5,900 recorded. The first round read it, but $50 more was spent meanwhile, so the
    # $100 purchase is recommended again on $5,950: $50 at 6% = $3.00 + $50 at 1% = $0.50.
    wallets.set_wallet(sync_client, keys, "u1", [BCP], ENGINE.catalog)
    sync_client.hset(keys.cap_spend("u1"), BCP_FIELD, 590_000)
    publish(sync_client, keys, groceries([100]))

    pool = await handle_once(redis_url, keys, sync_client, SpendsMeanwhile(redis_url, keys, times=1))

    [result] = read_results(sync_client, keys.results())
    assert pool.stats.cap_conflicts == 1
    assert result.rewards.cash_value_usd == Decimal("3.50")
    assert caps.read_spend(sync_client, keys, "u1") == {BCP_FIELD: 605_000}
    assert pending(sync_client, keys) == 0


async def test_pool_endless_conflict_gives_back(redis_url, keys, sync_client):
    # Spend changes before every round, so the entry is given back: pending, no result,
    # no dead letter, and only the other consumer's spend recorded.
    wallets.set_wallet(sync_client, keys, "u1", [BCP], ENGINE.catalog)
    publish(sync_client, keys, groceries([100]))

    pool = await handle_once(redis_url, keys, sync_client, SpendsMeanwhile(redis_url, keys, times=1000))

    assert pool.stats.cap_conflicts == MAX_CONFLICT_ROUNDS
    assert pool.stats.results == 0
    assert sync_client.xlen(keys.results()) == 0
    assert sync_client.exists(keys.dead_letters) == 0
    assert pending(sync_client, keys) == 1
    assert caps.read_spend(sync_client, keys, "u1") == {BCP_FIELD: 5_000 * (MAX_CONFLICT_ROUNDS + 1)}


# Four consumers on one user's transactions


@pytest.mark.parametrize("partitions", [1, 4])
async def test_four_consumers_same_totals_as_one(redis_url, keys, sync_client, partitions):
    # 23 purchases of $350 = $8,050. The first 17 make $5,950 at 6%; the 18th crosses with
    # $50 at 6% and $300 at 1%. Rewards: $6,000 x 6% = $360.00 + $2,050 x 1% = $20.50 = $380.50.
    # Each run keeps its own cap state, so "one" and "four" both start from zero.
    wallets.set_wallet(sync_client, keys, "u1", [BCP], ENGINE.catalog)
    publish(sync_client, keys, groceries([350] * 23), partitions=partitions)

    await drain_pools(redis_url, settings(keys, run="one", partitions=partitions), ["solo"])
    stats = await drain_pools(redis_url, settings(keys, run="four", partitions=partitions),
                              ["c1", "c2", "c3", "c4"])

    assert earned(sync_client, keys.results("one")) == Decimal("380.50")
    assert earned(sync_client, keys.results("four")) == Decimal("380.50")
    assert sum(stat.results for stat in stats) == 23
    assert sync_client.xlen(keys.results("four")) == 23
    assert caps.read_spend(sync_client, keys, "u1", "one") == {BCP_FIELD: 805_000}
    assert caps.read_spend(sync_client, keys, "u1", "four") == {BCP_FIELD: 805_000}
    assert caps.read_spend(sync_client, keys, "u1") == {}


# Wallet settings and valuations


async def test_valuation_override_changes_winner(redis_url, keys, sync_client):
    # Gold earns $8.00 on $100 at 2.0 cents a point; at u1's 1.0 cent it is $4.00, below $6.00.
    for user in ("u1", "u2"):
        wallets.set_wallet(sync_client, keys, user, [GOLD, BCP], ENGINE.catalog)
    caps.set_valuation(sync_client, keys, "u1", "Amex Membership Rewards", "1.0", ENGINE.valuations)
    publish(sync_client, keys, groceries([100], user="u1") + groceries([100], user="u2", prefix="v"))

    await drain_pools(redis_url, settings(keys), ["solo"])

    results = {result.user_id: result for result in read_results(sync_client, keys.results())}
    assert results["u1"].recommended_card.card_id == BCP
    assert results["u1"].rewards.cash_value_usd == Decimal("6.00")
    assert results["u2"].recommended_card.card_id == GOLD
    assert results["u2"].rewards.cash_value_usd == Decimal("8.00")


async def test_wallet_cashback_mode_changes_winner(redis_url, keys, sync_client):
    wallets.set_wallet(sync_client, keys, "u1", [GOLD, BCP], ENGINE.catalog, mode="cashback")
    wallets.set_wallet(sync_client, keys, "u2", [GOLD, BCP], ENGINE.catalog)
    publish(sync_client, keys, groceries([100], user="u1") + groceries([100], user="u2", prefix="v"))

    await drain_pools(redis_url, settings(keys), ["solo"])

    results = {result.user_id: result for result in read_results(sync_client, keys.results())}
    assert results["u1"].recommended_card.card_id == BCP
    assert results["u2"].recommended_card.card_id == GOLD


async def test_invalid_wallet_settings_fall_back(redis_url, keys, sync_client):
    # A mode and an override written around the CLI's checks are left out, not fatal:
    # the transaction is still recommended, at the default 2.0 cents and mode.
    sync_client.set(keys.wallet("u1"), '{"cards": ["amex-gold", "amex-blue-cash-preferred"], "mode": "bogus"}')
    sync_client.hset(keys.valuations("u1"), mapping={"Amex Membership Rewards": "abc", "No Such Points": "1.0"})
    publish(sync_client, keys, groceries([100]))

    [stats] = await drain_pools(redis_url, settings(keys), ["solo"])

    [result] = read_results(sync_client, keys.results())
    assert stats.dead_letters == 0
    assert result.recommended_card.card_id == GOLD
    assert result.rewards.cash_value_usd == Decimal("8.00")


# Replays


async def test_replay_rebuilds_cap_state(redis_url, keys, sync_client):
    wallets.set_wallet(sync_client, keys, "u1", [BCP], ENGINE.catalog)
    publish(sync_client, keys, groceries([1000] * 5 + [1500, 500, 500]))
    await drain_pools(redis_url, settings(keys), ["solo"])
    live = caps.read_spend(sync_client, keys, "u1")

    client = aioredis.Redis.from_url(redis_url)
    try:
        summary = await replay_async(client, keys, start="0", run="rebuild", workers=2, batch_size=3)
    finally:
        await client.aclose()

    assert live == {BCP_FIELD: 750_000}
    assert summary.results == 8
    assert caps.read_spend(sync_client, keys, "u1", "rebuild") == live
    assert caps.read_spend(sync_client, keys, "u1") == live
    assert earned(sync_client, keys.results("rebuild")) == Decimal("375.00")
    assert sync_client.ttl(keys.cap_spend("u1", "rebuild")) == -1
    assert sync_client.ttl(keys.cap_spend("u1")) == -1
