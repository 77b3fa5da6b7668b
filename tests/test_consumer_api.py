"""The consumer's Python API: engine failures, settings checks, replay options, and stopping a pool.

Entries are added with XADD, as a producer that bypasses ``Producer``
would, so the consumer reads exactly what the test writes. An engine that
fails is a copy of the default engine with one method replaced, so the pool
still runs it as the in-process engine, with cap state.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest
import redis.asyncio as aioredis
import structlog

from consumer.pool import ConsumerPool
from consumer.recommenders import InProcessRecommender
from consumer.settings import ConsumerSettings, InvalidSettingsError
from consumer.transports import RedisStreamTransport
from orchestrator_servers import UvicornThread
from rewardpilot.cli import replay_cmd
from rewardpilot.codec import encode_transaction
from rewardpilot.engine import RulesEngine, UnknownCardError
from rewardpilot.engine.state import SpendState
from rewardpilot.models import Transaction
from rewardpilot.orchestrator import create_app
from rewardpilot.orchestrator.service import EngineFailedError, RecommendService
from rewardpilot.orchestrator.contract import RecommendRequest
from rewardpilot.replay import InvalidReplayError, replay_async
from rewardpilot.results import read_results
from rewardpilot.wallets import set_wallet

# Amex Blue Cash Preferred earns 6% at U.S. supermarkets on up to $6,000 a
# year, so $2,500 purchases reach the cap on the third one.
CAPPED_WALLET = ["amex-blue-cash-preferred"]
START = datetime(2026, 3, 10, 15, tzinfo=timezone.utc)


def grocery(transaction_id: str, user_id: str = "u-1", amount: str = "2500.00", minute: int = 0) -> Transaction:
    return Transaction(transaction_id=transaction_id, user_id=user_id, merchant="Whole Foods", mcc="5411",
                       category="groceries", amount_usd=Decimal(amount), timestamp=START + timedelta(minutes=minute))


def add_entries(client, keys, transactions: list[Transaction]) -> None:
    for transaction in transactions:
        client.xadd(keys.transactions, encode_transaction(transaction))


def engine_failing_on(transaction_id: str, *, method: str = "evaluate_or_fallback",
                      error: Exception = OverflowError("date value out of range")) -> RulesEngine:
    """Return a copy of the default engine whose ``method`` raises ``error`` for one transaction.

    ``evaluate_or_fallback`` runs the real evaluation first, so the failed
    transaction has already added its spend to the batch's state.
    """
    engine = copy.copy(RulesEngine.default())
    real = getattr(engine, method)

    def failing(transaction, *args, **kwargs):
        outcome = real(transaction, *args, **kwargs)
        if transaction.transaction_id == transaction_id:
            raise error
        return outcome

    setattr(engine, method, failing)
    return engine


def drain(url: str, settings: ConsumerSettings, engine: RulesEngine | None = None):
    async def main():
        client = aioredis.Redis.from_url(url)
        try:
            pool = ConsumerPool(client, settings, InProcessRecommender(engine))
            return await asyncio.wait_for(pool.run(), timeout=60)
        finally:
            await client.aclose()

    return asyncio.run(main())


def dead_letters(client, keys) -> list[dict]:
    if not client.exists(keys.dead_letters):
        return []
    return [json.loads(fields["data"]) for _, fields in client.xrange(keys.dead_letters)]


def expected_cash(transactions: list[Transaction], wallet: list[str]) -> dict[str, Decimal]:
    """Cash value of each transaction when the engine recommends them in order with shared spend."""
    engine = RulesEngine.default()
    state = SpendState()
    return {
        transaction.transaction_id: engine.evaluate_or_fallback(
            transaction, wallet, wallet_source="user", state=state).to_model().rewards.cash_value_usd
        for transaction in transactions
    }


# One transaction the engine fails on

def test_engine_error_dead_letters_one_entry(redis_url, keys, sync_client):
    set_wallet(sync_client, keys, "u-1", CAPPED_WALLET, RulesEngine.default().catalog)
    good = [grocery(f"g-{index}", minute=index) for index in range(4)]
    bad = grocery("bad-1", minute=1)
    add_entries(sync_client, keys, [good[0], bad, *good[1:]])

    settings = ConsumerSettings(keys=keys, workers=1, block_ms=100, drain=True)
    stats = drain(redis_url, settings, engine_failing_on("bad-1"))

    assert stats.results == 4
    assert stats.dead_letters == 1
    letters = dead_letters(sync_client, keys)
    assert [letter["transaction_id"] for letter in letters] == ["bad-1"]
    assert letters[0]["error_type"] == "OverflowError"
    assert letters[0]["error"] == "date value out of range"
    assert sync_client.xpending(keys.transactions, keys.group())["pending"] == 0


def test_engine_error_takes_back_its_spend(redis_url, keys, sync_client):
    set_wallet(sync_client, keys, "u-1", CAPPED_WALLET, RulesEngine.default().catalog)
    good = [grocery(f"g-{index}", minute=index) for index in range(4)]
    add_entries(sync_client, keys, [good[0], grocery("bad-1", minute=1), *good[1:]])

    drain(redis_url, ConsumerSettings(keys=keys, workers=1, block_ms=100, drain=True), engine_failing_on("bad-1"))

    got = {result.transaction_id: result.rewards.cash_value_usd for result in read_results(sync_client, keys.results())}
    # The failed purchase's $2,500 must not use up the cap of the purchases after it.
    assert got == expected_cash(good, CAPPED_WALLET)


def test_engine_error_while_building_items(redis_url, keys, sync_client):
    set_wallet(sync_client, keys, "u-1", CAPPED_WALLET, RulesEngine.default().catalog)
    good = [grocery(f"g-{index}", minute=index) for index in range(3)]
    add_entries(sync_client, keys, [good[0], grocery("bad-2", minute=1), *good[1:]])
    engine = engine_failing_on("bad-2", method="spend_fields", error=RuntimeError("spend fields failed"))

    stats = drain(redis_url, ConsumerSettings(keys=keys, workers=1, block_ms=100, drain=True), engine)

    assert stats.results == 3
    letters = dead_letters(sync_client, keys)
    assert [letter["transaction_id"] for letter in letters] == ["bad-2"]
    assert letters[0]["error_type"] == "RuntimeError"
    got = {result.transaction_id: result.rewards.cash_value_usd for result in read_results(sync_client, keys.results())}
    assert got == expected_cash(good, CAPPED_WALLET)


def test_engine_error_in_single_entry_batch(redis_url, keys, sync_client):
    add_entries(sync_client, keys, [grocery("bad-3")])
    engine = engine_failing_on("bad-3", method="spend_fields", error=RuntimeError("spend fields failed"))

    stats = drain(redis_url, ConsumerSettings(keys=keys, workers=1, block_ms=100, drain=True, wallet=CAPPED_WALLET),
                  engine)

    assert stats.results == 0
    assert [letter["error_type"] for letter in dead_letters(sync_client, keys)] == ["RuntimeError"]


def test_service_engine_error_raises_named_error():
    service = RecommendService(engine_failing_on("o-bad"))
    request = RecommendRequest.model_validate({**order("o-bad")})

    with pytest.raises(EngineFailedError) as raised:
        asyncio.run(service.evaluate(request))

    assert "'o-bad'" in str(raised.value)
    assert "OverflowError: date value out of range" in str(raised.value)
    assert isinstance(raised.value.__cause__, OverflowError)


def order(transaction_id: str) -> dict:
    return {"transaction_id": transaction_id, "user_id": "u-1", "merchant": "Whole Foods Market",
            "category": "groceries", "amount_usd": "40.00", "mcc": "5411", "wallet": ["amex-gold"]}


def test_orchestrator_batch_engine_error_fails_alone():
    items = [order("o-1"), order("o-bad"), order("o-3")]

    with UvicornThread(create_app(engine_failing_on("o-bad"))) as running:
        batch = httpx.post(f"{running.url}/recommend/batch", json=items, timeout=10)
        single = httpx.post(f"{running.url}/recommend", json=order("o-bad"), timeout=10)

    assert batch.status_code == 200
    results = batch.json()["results"]
    assert [result["ok"] for result in results] == [True, False, True]
    assert "OverflowError" in results[1]["error"]["message"]
    assert results[2]["recommendation"]["transaction_id"] == "o-3"
    assert single.status_code == 422
    assert "OverflowError" in single.json()["error"]["message"]


# Settings checked when built

@pytest.mark.parametrize("field, value", [
    ("workers", 0),
    ("workers", -1),
    ("workers", 257),
    ("workers", True),
    ("workers", 2.0),
    ("batch_size", 0),
    ("batch_size", 10_001),
    ("block_ms", 0),
    ("max_deliveries", 0),
    ("visibility_timeout_ms", 0),
    ("result_ttl_seconds", -1),
    ("partitions", 0),
    ("partitions", 1025),
    ("lease_ms", 99),
    ("cap_ttl_seconds", -1),
    ("results_maxlen", 0),
    ("shutdown_grace_seconds", -1),
    ("claim_interval_seconds", 0),
    ("wallet_cache_seconds", float("nan")),
    ("trim_interval_seconds", 0),
    ("trim_older_than_seconds", 0),
    ("run", "bad:name"),
    ("run", ""),
    ("run", "name\n"),
    ("wallet", "amex-gold"),
    ("wallet", []),
    ("wallet", [1]),
])
def test_settings_reject_invalid_field(field, value):
    with pytest.raises(InvalidSettingsError) as raised:
        ConsumerSettings(**{field: value})

    assert isinstance(raised.value, ValueError)
    assert raised.value.field == field
    assert f"ConsumerSettings.{field}={value!r}" in str(raised.value)
    assert "give " in str(raised.value)


def test_settings_accept_limits():
    settings = ConsumerSettings(workers=256, batch_size=10_000, block_ms=60_000, visibility_timeout_ms=1,
                                shutdown_grace_seconds=0, result_ttl_seconds=0, cap_ttl_seconds=0,
                                partitions=1024, lease_ms=100, run="catalog-2026.12_b", wallet=["csp"])

    assert settings.workers == 256
    assert settings.run == "catalog-2026.12_b"


def test_pool_checks_changed_settings():
    settings = ConsumerSettings()
    settings.batch_size = 0

    with pytest.raises(InvalidSettingsError, match="batch_size=0"):
        ConsumerPool(aioredis.Redis(), settings)


# Replay options checked before Redis

@pytest.mark.parametrize("options, error, fragment", [
    ({"workers": 0}, InvalidReplayError, "workers=0 is invalid: give a whole number from 1 to 256"),
    ({"workers": -1}, InvalidReplayError, "workers=-1 is invalid"),
    ({"batch_size": 0}, InvalidReplayError, "batch_size=0 is invalid: give a whole number from 1 to 10000"),
    ({"block_ms": 0}, InvalidReplayError, "block_ms=0 is invalid"),
    ({"wallet": "amex-gold"}, InvalidReplayError, "wallet='amex-gold' is invalid: give a list"),
    ({"wallet": []}, InvalidReplayError, "wallet=[] is invalid"),
    ({"wallet": ["typo"]}, UnknownCardError, "unknown card 'typo'"),
    ({"wallet": ["amex-gold", "not-a-card"]}, UnknownCardError, "unknown card 'not-a-card'"),
    ({"run": "bad:name"}, InvalidReplayError, "run name 'bad:name' is invalid"),
])
def test_replay_rejects_before_redis(redis_url, keys, sync_client, options, error, fragment):
    sync_client.xadd(keys.transactions, encode_transaction(grocery("r-1")))
    before = sorted(sync_client.scan_iter(f"{keys.prefix}*", count=1000))

    async def main():
        client = aioredis.Redis.from_url(redis_url)
        try:
            await replay_async(client, keys, **{"start": "0", "run": "checked", **options})
        finally:
            await client.aclose()

    with pytest.raises(error) as raised:
        asyncio.run(main())

    assert fragment in str(raised.value)
    assert sorted(sync_client.scan_iter(f"{keys.prefix}*", count=1000)) == before
    assert sync_client.xinfo_groups(keys.transactions) == []


def test_replay_defaults_to_one_worker():
    assert inspect.signature(replay_async).parameters["workers"].default == 1
    assert inspect.signature(replay_cmd.replay).parameters["workers"].default.default == 1


def test_replay_default_keeps_user_order(redis_url, keys, sync_client):
    """Capped bonuses land on the same transactions as in a live run that kept stream order."""
    catalog = RulesEngine.default().catalog
    for user in ("u-1", "u-2", "u-3"):
        set_wallet(sync_client, keys, user, ["amex-blue-cash-preferred", "citi-double-cash"], catalog)
    add_entries(sync_client, keys, [grocery(f"o-{index}", user_id=f"u-{index % 3 + 1}", amount="400.00",
                                            minute=index) for index in range(180)])
    drain(redis_url, ConsumerSettings(keys=keys, workers=1, batch_size=10, block_ms=100, drain=True))

    async def main():
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await replay_async(client, keys, start="0", run="same-again", batch_size=10, compare=True)
        finally:
            await client.aclose()

    summary = asyncio.run(main())

    assert summary.results == 180
    assert summary.comparison.compared == 180
    assert summary.comparison.differences == []


@pytest.mark.parametrize("workers, warned", [(1, False), (2, True)])
def test_replay_compare_warns_many_workers(redis_url, keys, sync_client, workers, warned):
    add_entries(sync_client, keys, [grocery("w-1")])

    async def main():
        client = aioredis.Redis.from_url(redis_url)
        try:
            await replay_async(client, keys, start="0", run="warned", workers=workers, compare=True)
        finally:
            await client.aclose()

    with structlog.testing.capture_logs() as logs:
        asyncio.run(main())

    order_warnings = [event for event in logs if "out of stream order" in event["event"]]
    assert len(order_warnings) == (1 if warned else 0)
    if warned:
        assert order_warnings[0]["workers"] == 2
        assert order_warnings[0]["log_level"] == "warning"


# Stopping a pool

def test_stop_from_another_thread(redis_url, keys):
    """stop() from a thread that runs no event loop ends run(), even in asyncio debug mode."""
    started = threading.Event()
    outcome: dict = {}

    def run_pool() -> None:
        async def main():
            client = aioredis.Redis.from_url(redis_url)
            try:
                pool = outcome["pool"] = ConsumerPool(client, ConsumerSettings(keys=keys, workers=2, block_ms=200))
                asyncio.get_running_loop().call_soon(started.set)
                outcome["stats"] = await pool.run()
            finally:
                await client.aclose()

        try:
            asyncio.run(main(), debug=True)
        except BaseException as exc:  # reported by the asserts below
            outcome["error"] = exc

    thread = threading.Thread(target=run_pool, daemon=True)
    thread.start()
    assert started.wait(10)
    time.sleep(0.5)  # the workers are now blocked in XREADGROUP

    outcome["pool"].stop()
    outcome["pool"].stop()  # a second call does nothing
    thread.join(10)

    assert not thread.is_alive()
    assert "error" not in outcome
    assert outcome["stats"].results == 0


async def test_stop_before_run(redis_url, keys):
    client = aioredis.Redis.from_url(redis_url)
    try:
        pool = ConsumerPool(client, ConsumerSettings(keys=keys, workers=1, block_ms=200))
        pool.stop()
        stats = await asyncio.wait_for(pool.run(), timeout=10)
    finally:
        await client.aclose()

    assert stats.results == 0


class SlowSettleTransport(RedisStreamTransport):
    """Returns from each settle half a second after Redis replied, so a cancellation lands after the write."""

    def __init__(self, *args):
        super().__init__(*args)
        self.settled = asyncio.Event()

    async def settle(self, *args, **kwargs):
        counts = await super().settle(*args, **kwargs)
        self.settled.set()
        await asyncio.sleep(0.5)
        return counts


async def test_cancel_counts_completed_settle(redis_url, keys, sync_client):
    add_entries(sync_client, keys, [grocery(f"c-{index}", amount="20.00", minute=index) for index in range(5)])
    client = aioredis.Redis.from_url(redis_url)
    try:
        settings = ConsumerSettings(keys=keys, workers=1, block_ms=100)
        transport = SlowSettleTransport(client, settings, "slow-settler")
        pool = ConsumerPool(client, settings, transport=transport)
        running = asyncio.create_task(pool.run())
        await asyncio.wait_for(transport.settled.wait(), timeout=20)

        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    finally:
        await client.aclose()

    assert running.cancelled()
    assert sync_client.xlen(keys.results()) == 5
    assert pool.stats.results == 5
