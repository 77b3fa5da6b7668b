"""HttpRecommender against the real orchestrator, a per-item proxy, and scripted misbehaving servers."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from email.utils import format_datetime

import httpx
import pytest

from consumer.errors import PermanentError, TransientError
from consumer.recommenders.base import ItemError, WorkItem
from consumer.recommenders.factory import make_recommender
from consumer.recommenders.http import HttpRecommender
from consumer.recommenders.in_process import InProcessRecommender
from consumer.recommenders.mcp import McpRecommender
from orchestrator_servers import Scripted, ScriptedServer, UvicornThread
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Recommendation, Transaction
from rewardpilot.orchestrator import create_app

API_KEY = "client-test-key-5a1"


def item(transaction_id: str, amount: str = "100.00", *, mcc: str = "5411", merchant: str = "Whole Foods",
         wallet=("amex-gold", "citi-double-cash")) -> WorkItem:
    transaction = Transaction(
        transaction_id=transaction_id, user_id="u-1", merchant=merchant, category="groceries",
        amount_usd=amount, mcc=mcc,
    )
    return WorkItem(transaction=transaction, wallet=wallet, wallet_source="user" if wallet else "catalog")


@pytest.fixture(scope="module")
def engine():
    return RulesEngine.default()


@pytest.fixture(scope="module")
def orchestrator(engine):
    with UvicornThread(create_app(engine, api_key=API_KEY)) as running:
        yield running


class PerItemProxy:
    """An orchestrator whose /health does not list /recommend/batch; it counts calls in flight."""

    def __init__(self, app):
        self.app = app
        self.in_flight = 0
        self.max_in_flight = 0
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.paths.append(scope["path"])
        if scope["path"] == "/health":
            body = json.dumps({"status": "ok", "endpoints": ["/health", "/recommend"]}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["path"] == "/recommend/batch":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.02)  # lets concurrent calls overlap, so the bound is exercised
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


async def test_batch_path_against_orchestrator(orchestrator):
    recommender = HttpRecommender(orchestrator.url, api_key=API_KEY)
    items = [item("t-1"), item("t-2", amount="5.00", mcc="5812", merchant="Nobu")]
    try:
        outcomes = await recommender.recommend(items)
    finally:
        await recommender.aclose()

    assert all(isinstance(outcome, Recommendation) for outcome in outcomes)
    first, second = outcomes
    assert first.transaction_id == "t-1"
    assert first.recommended_card.card_id == "amex-gold"
    assert first.recommended_card.issuer == "American Express"
    assert first.rewards.amount == Decimal("400")
    assert first.rewards.cash_value_usd == Decimal("8.00")
    assert first.wallet_source == "user"
    assert first.recommender == "http"
    assert second.transaction_id == "t-2"
    assert second.rewards.cash_value_usd == Decimal("0.40")  # $5 x 4 points x 2.0 cents
    assert [alt.card.card_id for alt in first.alternatives] == ["citi-double-cash"]


async def test_http_rewards_written_as_in_process(orchestrator, engine):
    """Money through the JSON contract keeps the in-process engine's digits: 16.40, not 16.4."""
    items = [item("t-9", amount="205.00")]
    recommender = HttpRecommender(orchestrator.url, api_key=API_KEY)
    try:
        (over_http,) = await recommender.recommend(items)
    finally:
        await recommender.aclose()
    in_process = engine.recommend(items[0].transaction, list(items[0].wallet), wallet_source="user")

    http_rewards = json.loads(over_http.rewards.model_dump_json())
    local_rewards = json.loads(in_process.rewards.model_dump_json())
    assert local_rewards["cash_value_usd"] == "16.40"
    assert http_rewards == local_rewards


async def test_batch_path_item_error(orchestrator):
    # An unknown card in a "run" wallet fails its item (a "user" wallet would leave the card out).
    run_wallet = WorkItem(item("t-2").transaction, ("no-such-card",), "run")
    recommender = HttpRecommender(orchestrator.url, api_key=API_KEY)
    try:
        outcomes = await recommender.recommend([item("t-1"), run_wallet])
    finally:
        await recommender.aclose()

    assert isinstance(outcomes[0], Recommendation)
    assert isinstance(outcomes[1], ItemError)
    assert outcomes[1].error_type == "unknown_card"
    assert outcomes[1].http_status == 200  # the batch's status; the item's error is inside the response
    assert "no-such-card" in outcomes[1].message


async def test_per_item_path_under_bound(engine):
    proxy = PerItemProxy(create_app(engine))
    items = [item(f"t-{number}") for number in range(6)]
    with UvicornThread(proxy) as running:
        recommender = HttpRecommender(running.url, concurrency=2)
        try:
            outcomes = await recommender.recommend(items)
        finally:
            await recommender.aclose()

    assert [outcome.transaction_id for outcome in outcomes] == [f"t-{number}" for number in range(6)]
    assert all(outcome.rewards.cash_value_usd == Decimal("8.00") for outcome in outcomes)
    assert proxy.paths.count("/recommend") == 6
    assert "/recommend/batch" not in proxy.paths
    assert proxy.max_in_flight <= 2


async def test_per_item_cancel_releases_slot(engine):
    hang = Scripted(200, b"{}", hang_seconds=30)
    with ScriptedServer({"/health": Scripted(200, b'{"endpoints": ["/recommend"]}'), "/recommend": hang}) as scripted:
        recommender = HttpRecommender(scripted.url, concurrency=1, timeout=60)
        task = asyncio.create_task(recommender.recommend([item("t-1")]))
        for _ in range(200):
            if any(path == "/recommend" for _, path, _, _ in scripted.requests):
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        # With the slot leaked, this acquire would block for ever.
        await asyncio.wait_for(recommender._semaphore.acquire(), timeout=5)
        recommender._semaphore.release()
        await recommender.aclose()


def scripted_batch(answer: Scripted) -> dict[str, Scripted]:
    return {"/health": Scripted(200, b'{"endpoints": ["/recommend/batch"]}'), "/recommend/batch": answer}


async def call(url: str, **options):
    recommender = HttpRecommender(url, **options)
    try:
        return await recommender.recommend([item("t-1"), item("t-2")])
    finally:
        await recommender.aclose()


async def test_429_retry_after_seconds():
    answer = Scripted(429, b'{"detail": "slow down"}', {"Retry-After": "7"})
    with ScriptedServer(scripted_batch(answer)) as scripted:
        with pytest.raises(TransientError) as failure:
            await call(scripted.url)

    assert failure.value.status == 429
    assert failure.value.retry_after == 7.0


async def test_429_retry_after_http_date():
    when = datetime.now(timezone.utc) + timedelta(seconds=120)
    answer = Scripted(429, b"{}", {"Retry-After": format_datetime(when, usegmt=True)})
    with ScriptedServer(scripted_batch(answer)) as scripted:
        with pytest.raises(TransientError) as failure:
            await call(scripted.url)

    assert failure.value.status == 429
    assert 60 < failure.value.retry_after <= 120  # whole seconds in the header; generous for a slow machine


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gateway_statuses_are_transient(status):
    with ScriptedServer(scripted_batch(Scripted(status, b"down"))) as scripted:
        with pytest.raises(TransientError) as failure:
            await call(scripted.url)

    assert failure.value.status == status
    assert failure.value.retry_after is None


async def test_500_is_permanent_per_item():
    # consumer.retry treats 500 as permanent: the same request broke the server.
    body = b'{"detail": "Internal Server Error"}'
    with ScriptedServer(scripted_batch(Scripted(500, body))) as scripted:
        outcomes = await call(scripted.url)

    assert [outcome.http_status for outcome in outcomes] == [500, 500]
    assert all(isinstance(outcome, ItemError) for outcome in outcomes)


async def test_hang_past_timeout_is_transient():
    with ScriptedServer(scripted_batch(Scripted(200, b"{}", hang_seconds=30))) as scripted:
        with pytest.raises(TransientError) as failure:
            await call(scripted.url, timeout=0.3)

    assert failure.value.status is None
    assert "Timeout" in str(failure.value)


async def test_body_not_json_is_item_error_each():
    answer = Scripted(200, b"<html>oops</html>", {"Content-Type": "text/html"})
    with ScriptedServer(scripted_batch(answer)) as scripted:
        outcomes = await call(scripted.url)

    assert len(outcomes) == 2
    assert all(isinstance(outcome, ItemError) for outcome in outcomes)
    assert all(outcome.error_type == "contract_error" for outcome in outcomes)


async def test_batch_answer_wrong_length_is_item_error():
    answer = Scripted(200, b'{"results": []}')
    with ScriptedServer(scripted_batch(answer)) as scripted:
        outcomes = await call(scripted.url)

    assert [outcome.error_type for outcome in outcomes] == ["contract_error", "contract_error"]


async def test_401_is_item_error_with_status(orchestrator):
    outcomes = await call(orchestrator.url, api_key="wrong-key")

    assert all(isinstance(outcome, ItemError) for outcome in outcomes)
    assert [outcome.http_status for outcome in outcomes] == [401, 401]
    assert all("wrong-key" not in outcome.message for outcome in outcomes)


async def test_api_key_from_environment(orchestrator, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_API_KEY", API_KEY)

    outcomes = await call(orchestrator.url)

    assert all(isinstance(outcome, Recommendation) for outcome in outcomes)


async def test_connection_refused_is_transient():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    with pytest.raises(TransientError) as failure:
        await call(f"http://127.0.0.1:{closed_port}")

    assert failure.value.status is None


async def test_health_failure_is_not_remembered():
    with ScriptedServer({"/health": Scripted(503, b"")}) as scripted:
        recommender = HttpRecommender(scripted.url)
        with pytest.raises(TransientError):
            await recommender.recommend([item("t-1")])
        scripted.answers["/health"] = Scripted(200, b'{"endpoints": ["/recommend/batch"]}')
        scripted.answers["/recommend/batch"] = Scripted(401, b'{"detail": "no"}')
        outcomes = await recommender.recommend([item("t-1")])
        await recommender.aclose()

    assert outcomes[0].http_status == 401
    assert [path for _, path, _, _ in scripted.requests].count("/health") == 2


async def test_request_sends_contract_fields():
    with ScriptedServer(scripted_batch(Scripted(200, b'{"results": []}'))) as scripted:
        await call(scripted.url, api_key="k-1")

    method, path, headers, body = scripted.requests[-1]
    assert (method, path) == ("POST", "/recommend/batch")
    assert headers["Authorization"] == "Bearer k-1"
    sent = json.loads(body)["transactions"][0]
    assert sent["amount_usd"] == 100.0
    assert sent["mcc"] == "5411"
    assert sent["wallet"] == ["amex-gold", "citi-double-cash"]
    assert sent["transaction_id"] == "t-1"


@pytest.mark.parametrize("url", ["ftp://host", "http://", "127.0.0.1:8080"])
def test_invalid_url_is_rejected(url):
    with pytest.raises(ValueError, match="invalid"):
        HttpRecommender(url)


def test_factory_picks_recommender():
    assert isinstance(make_recommender(None), InProcessRecommender)
    assert isinstance(make_recommender("http://127.0.0.1:8080", timeout=2.0, engine=None), HttpRecommender)
    assert isinstance(make_recommender("https://orchestrator.example/api"), HttpRecommender)
    assert isinstance(make_recommender("http://127.0.0.1:8080/mcp"), McpRecommender)
    assert isinstance(make_recommender("mcp+http://127.0.0.1:8080/tools"), McpRecommender)
    assert make_recommender("mcp+http://127.0.0.1:8080/tools").url == "http://127.0.0.1:8080/tools"
    with pytest.raises(ValueError, match="invalid"):
        make_recommender("redis://127.0.0.1:6379")


async def test_mcp_recommender_against_orchestrator(orchestrator):
    # An unknown card in a "run" wallet fails its item (a "user" wallet would leave the card out).
    run_wallet = WorkItem(item("t-2").transaction, ("no-such-card",), "run")
    recommender = McpRecommender(f"{orchestrator.url}/mcp", api_key=API_KEY)
    try:
        outcomes = await recommender.recommend([item("t-1"), run_wallet])
    finally:
        await recommender.aclose()

    assert isinstance(outcomes[0], Recommendation)
    assert outcomes[0].recommended_card.card_id == "amex-gold"
    assert outcomes[0].rewards.cash_value_usd == Decimal("8.00")
    assert outcomes[0].recommender == "mcp"
    assert isinstance(outcomes[1], ItemError)
    assert "no-such-card" in outcomes[1].message


async def test_mcp_recommender_refused_is_transient():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    recommender = McpRecommender(f"http://127.0.0.1:{closed_port}/mcp", timeout=2.0)
    try:
        with pytest.raises(TransientError):
            await recommender.recommend([item("t-1")])
    finally:
        await recommender.aclose()


async def test_mcp_recommender_wrong_key_permanent(orchestrator):
    recommender = McpRecommender(f"{orchestrator.url}/mcp", api_key="wrong-key", timeout=2.0)
    try:
        outcomes = await recommender.recommend([item("t-1"), item("t-2")])
    finally:
        await recommender.aclose()

    assert [type(outcome) for outcome in outcomes] == [ItemError, ItemError]
    assert outcomes[0].http_status == 401
    assert "wrong-key" not in outcomes[0].message
    assert "ORCHESTRATOR_API_KEY" in outcomes[0].message


async def test_connect_refused_is_transient():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    http = HttpRecommender(f"http://127.0.0.1:{closed_port}", timeout=2.0)
    mcp = McpRecommender(f"http://127.0.0.1:{closed_port}/mcp", timeout=2.0)
    try:
        with pytest.raises(TransientError, match="/health"):
            await http.connect()
        with pytest.raises(TransientError, match="MCP server"):
            await mcp.connect()
    finally:
        await http.aclose()
        await mcp.aclose()


async def test_connect_reaches_running_orchestrator(orchestrator):
    http = HttpRecommender(orchestrator.url, api_key=API_KEY)
    mcp = McpRecommender(f"{orchestrator.url}/mcp", api_key=API_KEY, timeout=2.0)
    try:
        await http.connect()
        await mcp.connect()
    finally:
        await http.aclose()
        await mcp.aclose()


async def test_mcp_connect_wrong_key_permanent(orchestrator):
    recommender = McpRecommender(f"{orchestrator.url}/mcp", api_key="wrong-key", timeout=2.0)
    try:
        with pytest.raises(PermanentError) as rejected:
            await recommender.connect()
    finally:
        await recommender.aclose()

    assert rejected.value.status == 401
    assert "wrong-key" not in str(rejected.value)


async def test_user_wallet_reasoning_over_http(orchestrator):
    recommender = HttpRecommender(orchestrator.url, api_key=API_KEY)
    try:
        [outcome] = await recommender.recommend([item("t-user")])
    finally:
        await recommender.aclose()

    assert outcome.wallet_source == "user"
    assert "named for this run" not in outcome.reasoning
    assert "No wallet on file" not in outcome.reasoning
