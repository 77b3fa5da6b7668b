"""HttpRecommender against third-party orchestrators that bend the REST contract.

Each server is a ScriptedServer on 127.0.0.1 whose responses the test
writes. They return results in the wrong order, echoes of another
transaction, a failing or missing /health, unrounded money, a hang past the
timeout and a batch response of the wrong length.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import redis
import redis.asyncio as aioredis
import structlog.testing

from consumer.build import CallOptions, build_pool
from consumer.dlq import list_dead_letters
from consumer.errors import ConfigurationError, TransientError
from consumer.recommenders.base import ItemError, WorkItem
from consumer.recommenders.http import CONTRACT_DOC, HttpRecommender, describe_indexes
from consumer.settings import ConsumerSettings
from orchestrator_servers import Scripted, ScriptedServer
from producer import Producer
from rewardpilot.models import Recommendation, Transaction
from rewardpilot.orchestrator.contract import EchoMismatchError, RecommendResponse

BATCH_HEALTH = Scripted(200, b'{"endpoints": ["/health", "/recommend", "/recommend/batch"]}')
PER_ITEM_HEALTH = Scripted(200, b'{"endpoints": ["/health", "/recommend"]}')


def purchases(count: int) -> list[Transaction]:
    start = datetime(2026, 11, 4, 12, 0, tzinfo=timezone.utc)
    return [
        Transaction(transaction_id=f"t-{index:02d}", user_id="u-1", merchant="Whole Foods Market",
                    category="groceries", amount_usd=Decimal("10.00") + index, mcc="5411",
                    timestamp=start + timedelta(minutes=index))
        for index in range(count)
    ]


def items(count: int) -> list[WorkItem]:
    return [WorkItem(transaction, ("amex-gold",), "run") for transaction in purchases(count)]


def recommendation(card_id: str = "card-a", cash_value: object = 0.2, **fields) -> dict:
    """Build a contract recommendation. ``fields`` adds echoes and overrides rewards."""
    rewards = {"points": 20, "cash_value": cash_value, "unit": "points", "program": "Example Points"}
    rewards.update(fields.pop("rewards", {}))
    return {"recommended_card": {"card_id": card_id, "card_name": f"Card {card_id}"}, "rewards": rewards,
            "confidence": 0.9, "reasoning": "example", **fields}


def batch_answer(recommendations: list[dict]) -> Scripted:
    results = [{"index": index, "ok": True, "recommendation": body} for index, body in enumerate(recommendations)]
    return Scripted(200, json.dumps({"results": results}).encode())


async def call(url: str, work: list[WorkItem], **options):
    recommender = HttpRecommender(url, **options)
    try:
        return await recommender.recommend(work)
    finally:
        await recommender.aclose()


def paths(scripted: ScriptedServer) -> list[str]:
    return [path for _, path, _, _ in scripted.requests]


# Responses that belong to another transaction


async def test_batch_reversed_results_rejected():
    """Indexes 0..19 in order, but each recommendation echoes the id of the transaction at the mirror position."""
    work = items(20)
    reversed_answers = [
        recommendation(f"card-{index}", transaction_id=f"t-{index:02d}") for index in reversed(range(20))
    ]
    with ScriptedServer({"/health": BATCH_HEALTH, "/recommend/batch": batch_answer(reversed_answers)}) as scripted:
        outcomes = await call(scripted.url, work)

    assert len(outcomes) == 20
    assert all(isinstance(outcome, ItemError) for outcome in outcomes)
    assert {outcome.error_type for outcome in outcomes} == {"contract_error"}
    assert {outcome.http_status for outcome in outcomes} == {200}
    first = outcomes[0].message
    assert first.startswith(
        "POST /recommend/batch: the response for transaction_id 't-00' echoes transaction_id 't-19'")
    assert "in request order" in first


async def test_batch_unknown_echo_rejected():
    work = items(3)
    answers = [recommendation(transaction_id=f"nope-{index}") for index in range(3)]
    with ScriptedServer({"/health": BATCH_HEALTH, "/recommend/batch": batch_answer(answers)}) as scripted:
        outcomes = await call(scripted.url, work)

    assert [type(outcome) for outcome in outcomes] == [ItemError] * 3
    assert "'nope-1'" in outcomes[1].message
    assert "'t-01'" in outcomes[1].message


async def test_batch_one_wrong_echo_fails_alone():
    work = items(3)
    answers = [recommendation(transaction_id="t-00"), recommendation(transaction_id="t-02"),
               recommendation(transaction_id="t-02")]
    with ScriptedServer({"/health": BATCH_HEALTH, "/recommend/batch": batch_answer(answers)}) as scripted:
        outcomes = await call(scripted.url, work)

    assert isinstance(outcomes[0], Recommendation)
    assert isinstance(outcomes[1], ItemError)
    assert isinstance(outcomes[2], Recommendation)


@pytest.mark.parametrize("echo", [{}, {"transaction_id": None, "user_id": None, "amount_usd": None}])
async def test_batch_missing_echo_accepted(echo):
    work = items(2)
    answers = [recommendation("card-a", **echo), recommendation("card-b", **echo)]
    with ScriptedServer({"/health": BATCH_HEALTH, "/recommend/batch": batch_answer(answers)}) as scripted:
        outcomes = await call(scripted.url, work)

    assert [outcome.transaction_id for outcome in outcomes] == ["t-00", "t-01"]
    assert [outcome.recommended_card.card_id for outcome in outcomes] == ["card-a", "card-b"]


@pytest.mark.parametrize("echo, expected", [
    ({"user_id": "u-2"}, "echoes user_id 'u-2' (the transaction's is 'u-1')"),
    ({"amount_usd": 99.5}, "echoes amount_usd 99.5 (the transaction's is 10.00)"),
])
async def test_other_echoes_mismatch_rejected(echo, expected):
    answers = [recommendation(transaction_id="t-00", **echo)]
    with ScriptedServer({"/health": BATCH_HEALTH, "/recommend/batch": batch_answer(answers)}) as scripted:
        (outcome,) = await call(scripted.url, items(1))

    assert isinstance(outcome, ItemError)
    assert outcome.error_type == "contract_error"
    assert expected in outcome.message


async def test_amount_echo_compared_as_number():
    answers = [recommendation(transaction_id="t-00", user_id="u-1", amount_usd=10.0)]  # the request's 10.00
    with ScriptedServer({"/health": BATCH_HEALTH, "/recommend/batch": batch_answer(answers)}) as scripted:
        (outcome,) = await call(scripted.url, items(1))

    assert isinstance(outcome, Recommendation)
    assert outcome.amount_usd == Decimal("10.00")


async def test_single_path_echo_mismatch_rejected():
    answer = Scripted(200, json.dumps(recommendation(transaction_id="t-07")).encode())
    with ScriptedServer({"/health": PER_ITEM_HEALTH, "/recommend": answer}) as scripted:
        outcomes = await call(scripted.url, items(2))

    assert "/recommend/batch" not in paths(scripted)
    assert [type(outcome) for outcome in outcomes] == [ItemError, ItemError]
    assert outcomes[0].http_status == 200
    assert outcomes[0].message.startswith(
        "POST /recommend: the response for transaction_id 't-00' echoes transaction_id 't-07', so it belongs to "
        "another transaction. Answer each transaction in request order")


def test_echo_mismatch_is_value_error():
    """The MCP client catches ValueError as a contract error, so the check covers it too."""
    answer = RecommendResponse.model_validate(recommendation(transaction_id="other"))

    with pytest.raises(EchoMismatchError) as failure:
        answer.to_recommendation(purchases(1)[0], wallet_source=None, recommender="mcp")

    assert isinstance(failure.value, ValueError)


def publish(redis_url: str, keys, transactions: list[Transaction]) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        Producer(client, keys, max_backlog=None).publish_many(transactions)
    finally:
        client.close()


async def test_pool_dead_letters_reversed_batch(redis_url, keys, sync_client):
    """A reversed batch response through the pool: no result is written and every entry is dead-lettered."""
    publish(redis_url, keys, purchases(20))
    answers = [recommendation(f"card-{index}", transaction_id=f"t-{index:02d}") for index in reversed(range(20))]
    settings = ConsumerSettings(keys=keys, workers=1, batch_size=20, block_ms=100, drain=True,
                                visibility_timeout_ms=1500, claim_interval_seconds=0.1, shutdown_grace_seconds=2.0)
    with ScriptedServer({"/health": BATCH_HEALTH, "/recommend/batch": batch_answer(answers)}) as scripted:
        client = aioredis.Redis.from_url(redis_url)
        options = CallOptions(orchestrator_url=scripted.url, max_attempts=2, base_delay=0.02, max_delay=0.05,
                              timeout=5.0, startup_wait=2.0)
        pool = build_pool(client, settings, options)
        try:
            await asyncio.wait_for(pool.run(), timeout=60)
        finally:
            await pool.recommender.aclose()
            await client.aclose()

    assert sync_client.xlen(keys.results()) == 0
    letters = [letter for _, letter in list_dead_letters(sync_client, keys)]
    assert len(letters) == 20
    assert {letter.error_type for letter in letters} == {"contract_error"}
    assert all("in request order" in letter.error for letter in letters)


# GET /health


async def test_health_500_is_checked_again():
    answers = {"/health": Scripted(500, b'{"detail": "boom"}'), "/recommend": Scripted(
        200, json.dumps(recommendation()).encode()), "/recommend/batch": batch_answer([recommendation()])}
    with ScriptedServer(answers) as scripted:
        recommender = HttpRecommender(scripted.url)
        recommender._health_recheck_seconds = (0.0,)  # read /health again on the next call
        try:
            with structlog.testing.capture_logs() as logs:
                first = await recommender.recommend(items(1))
                scripted.answers["/health"] = BATCH_HEALTH
                second = await recommender.recommend(items(1))
        finally:
            await recommender.aclose()

    assert isinstance(first[0], Recommendation)
    assert isinstance(second[0], Recommendation)
    assert paths(scripted) == ["/health", "/recommend", "/health", "/recommend/batch"]
    (warning,) = [event for event in logs if "GET /health failed with HTTP 500" in event["event"]]
    assert warning["log_level"] == "warning"
    assert "one POST /recommend per transaction" in warning["event"]
    assert warning["detail"] == "boom"


async def test_health_500_waits_before_rereading():
    answers = {"/health": Scripted(500, b"{}"), "/recommend": Scripted(200, json.dumps(recommendation()).encode())}
    with ScriptedServer(answers) as scripted:
        recommender = HttpRecommender(scripted.url)
        recommender._health_recheck_seconds = (3600.0,)
        try:
            await recommender.connect()
            await recommender.recommend(items(1))
            await recommender.recommend(items(1))
        finally:
            await recommender.aclose()

    assert paths(scripted) == ["/health", "/recommend", "/recommend"]


async def test_health_without_batch_warns():
    answers = {"/health": PER_ITEM_HEALTH, "/recommend": Scripted(200, json.dumps(recommendation()).encode())}
    with ScriptedServer(answers) as scripted:
        with structlog.testing.capture_logs() as logs:
            await call(scripted.url, items(2))
            await call(scripted.url, items(1))

    warnings = [event for event in logs if "does not list /recommend/batch" in event["event"]]
    assert len(warnings) == 2  # one per recommender, not one per call
    assert warnings[0]["log_level"] == "warning"
    assert '"endpoints" list contains "/recommend/batch"' in warnings[0]["event"]
    assert CONTRACT_DOC in warnings[0]["event"]
    assert paths(scripted).count("/health") == 2


async def test_health_404_names_missing_health():
    answers = {"/recommend": Scripted(200, json.dumps(recommendation()).encode())}  # no /health
    with ScriptedServer(answers) as scripted:
        with pytest.raises(ConfigurationError) as failure:
            await call(scripted.url, items(1))

    message = str(failure.value)
    assert f"GET {scripted.url}/health returned HTTP 404" in message
    assert "If the orchestrator has no GET /health, add one" in message
    assert CONTRACT_DOC in message
    assert "check the path of --orchestrator or ORCHESTRATOR_URL" in message
    assert "is not at this URL's path" not in message
    assert paths(scripted) == ["/health"]


async def test_batch_404_names_endpoint():
    with ScriptedServer({"/health": BATCH_HEALTH}) as scripted:
        with pytest.raises(ConfigurationError) as failure:
            await call(scripted.url, items(1))

    assert "does not offer POST /recommend/batch" in str(failure.value)


# Rounding


async def test_unrounded_response_is_rounded():
    """$0.3449 on $17.23 without an effective rate: 0.34 and 0.0197, as the in-process engine writes them."""
    transaction = purchases(1)[0].model_copy(update={"amount_usd": Decimal("17.23")})
    work = [WorkItem(transaction, None, "catalog")]
    body = recommendation(cash_value=0.3449, rewards={"points": 34.49}, alternatives=[
        {"card_id": "card-b", "card_name": "Card B", "rewards": {"points": 17.2, "cash_value": 0.17231,
                                                                    "effective_rate": 0.0100006}},
    ])
    answers = {"/health": PER_ITEM_HEALTH, "/recommend": Scripted(200, json.dumps(body).encode())}
    with ScriptedServer(answers) as scripted:
        (outcome,) = await call(scripted.url, work)

    rewards = json.loads(outcome.model_dump_json())["rewards"]
    assert rewards["cash_value_usd"] == "0.34"
    assert rewards["effective_rate"] == "0.0197"
    assert rewards["amount"] == "34.49"
    alternative = json.loads(outcome.alternatives[0].rewards.model_dump_json())
    assert alternative["cash_value_usd"] == "0.17"
    assert alternative["effective_rate"] == "0.0100"
    assert alternative["amount"] == "17.20"


@pytest.mark.parametrize("cash_value, rate, expected_cash, expected_rate", [
    ("0.045", None, "0.04", "0.0004"),  # half even: down to the even cent
    ("0.055", None, "0.06", "0.0006"),
    ("2.00", "0.019733", "2.00", "0.0197"),
    ("2.00", "0.01995", "2.00", "0.0200"),
    ("2.005", "0.02005", "2.00", "0.0200"),
])
def test_rewards_rounded_half_even(cash_value, rate, expected_cash, expected_rate):
    rewards = {"points": 200, "cash_value": Decimal(cash_value)}
    if rate is not None:
        rewards["effective_rate"] = Decimal(rate)
    answer = RecommendResponse.model_validate(recommendation(rewards=rewards))
    transaction = purchases(1)[0].model_copy(update={"amount_usd": Decimal("100.00")})

    result = answer.to_recommendation(transaction, wallet_source=None, recommender="http")

    assert str(result.rewards.cash_value_usd) == expected_cash
    assert str(result.rewards.effective_rate) == expected_rate


# Error messages


async def test_timeout_message_names_seconds():
    answers = {"/health": BATCH_HEALTH, "/recommend/batch": Scripted(200, b"{}", hang_seconds=30)}
    with ScriptedServer(answers) as scripted:
        with pytest.raises(TransientError) as failure:
            await call(scripted.url, items(2), timeout=0.3)

    message = str(failure.value)
    assert "POST /recommend/batch timed out after 0.3 s (ReadTimeout)" in message
    assert "--timeout" in message
    assert failure.value.status is None


@pytest.mark.parametrize("count, expected", [
    (19, "the response has 19 results for 20 items; missing indexes [19]"),
    (21, "the response has 21 results for 20 items; extra or repeated indexes [20]"),
])
async def test_batch_wrong_count_message(count, expected):
    answer = batch_answer([recommendation() for _ in range(count)])
    with ScriptedServer({"/health": BATCH_HEALTH, "/recommend/batch": answer}) as scripted:
        outcomes = await call(scripted.url, items(20))

    assert len(outcomes) == 20
    assert {outcome.error_type for outcome in outcomes} == {"contract_error"}
    assert expected in outcomes[0].message


def test_describe_indexes_cases():
    assert describe_indexes([], 25).startswith(
        "the response has 0 results for 25 items; missing indexes [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... (15 more)]")
    assert "extra or repeated indexes [1]" in describe_indexes([0, 1, 1], 3)
    assert "missing indexes [2]" in describe_indexes([0, 1, 1], 3)
    assert "out of order: position 0 has index 1" in describe_indexes([1, 0], 2)
    assert "extra or repeated indexes [-1]" in describe_indexes([-1, 1], 2)
