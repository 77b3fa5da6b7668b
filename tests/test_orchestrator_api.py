"""The orchestrator's REST contract, auth and limits, through HTTP against a real uvicorn server.

Expected rewards are worked by hand from the catalog's card terms:
Amex Gold earns 4x Membership Rewards at U.S. supermarkets and restaurants,
valued at 2.0 cents a point; Citi Double Cash earns 2x ThankYou points on
everything, valued at 1.0 cent.
"""

from __future__ import annotations

import json

import httpx
import pytest
import redis

from rewardpilot.engine import RulesEngine
from rewardpilot.orchestrator import create_app
from rewardpilot.orchestrator.contract import MAX_BATCH_ITEMS
from rewardpilot.wallets import set_wallet
from conftest import free_port
from orchestrator_servers import UvicornThread

API_KEY = "test-key-3f9c2a"
AUTH = {"Authorization": f"Bearer {API_KEY}"}

SUPERMARKET = {
    "transaction_id": "t-1",
    "user_id": "u-1",
    "merchant": "Whole Foods Market",
    "category": "groceries",
    "amount_usd": 100,
    "mcc": "5411",
    "wallet": ["amex-gold", "citi-double-cash"],
}


@pytest.fixture(scope="module")
def engine():
    return RulesEngine.default()


@pytest.fixture(scope="module")
def server(engine):
    with UvicornThread(create_app(engine, api_key=API_KEY, max_body_bytes=20_000)) as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def test_recommend_supermarket_amex_gold(client):
    response = client.post("/recommend", json=SUPERMARKET, headers=AUTH)

    assert response.status_code == 200
    body = response.json()
    assert body["transaction_id"] == "t-1"
    assert body["user_id"] == "u-1"
    assert body["recommended_card"]["card_id"] == "amex-gold"
    assert body["recommended_card"]["card_name"] == "American Express Gold Card"
    assert body["recommended_card"]["issuer"] == "American Express"
    assert body["rewards"]["points"] == 400  # $100 x 4
    assert body["rewards"]["cash_value"] == 8.0  # 400 x 2.0 cents
    assert body["rewards"]["effective_rate"] == 0.08
    assert body["wallet_source"] == "run"
    assert 0 <= body["confidence"] <= 1
    assert "4x" in body["reasoning"]
    assert [alt["card_id"] for alt in body["alternatives"]] == ["citi-double-cash"]
    assert body["alternatives"][0]["rewards"]["points"] == 200  # $100 x 2
    assert body["alternatives"][0]["rewards"]["cash_value"] == 2.0  # 200 x 1.0 cent
    assert body["catalog_version"]
    assert body["engine_version"]


def test_recommend_without_transaction_id(client):
    request = {key: value for key, value in SUPERMARKET.items() if key != "transaction_id"}
    request["amount_usd"] = "12.50"

    response = client.post("/recommend", json=request, headers=AUTH)

    assert response.status_code == 200
    assert response.json()["transaction_id"].startswith("orch-")
    assert response.json()["rewards"]["points"] == 50  # $12.50 x 4
    assert response.json()["rewards"]["cash_value"] == 1.0


def test_recommend_without_wallet_uses_catalog(client):
    request = {key: value for key, value in SUPERMARKET.items() if key != "wallet"}

    response = client.post("/recommend", json=request, headers=AUTH)

    assert response.status_code == 200
    assert response.json()["wallet_source"] == "catalog"


def test_recommend_reads_stored_wallet(engine, redis_url, keys):
    plain = redis.Redis.from_url(redis_url)
    try:
        set_wallet(plain, keys, "u-stored", ["citi-double-cash"], engine.catalog)
    finally:
        plain.close()
    request = {key: value for key, value in SUPERMARKET.items() if key != "wallet"}
    request["user_id"] = "u-stored"

    with UvicornThread(create_app(engine, redis_url=redis_url, prefix=keys.prefix)) as running:
        response = httpx.post(f"{running.url}/recommend", json=request, timeout=10)

    assert response.status_code == 200
    assert response.json()["wallet_source"] == "user"
    assert response.json()["recommended_card"]["card_id"] == "citi-double-cash"


def test_batch_reads_stored_wallets_at_once(engine, redis_url, keys):
    """Items without a wallet get their user's stored one; items with a wallet keep it."""
    plain = redis.Redis.from_url(redis_url)
    try:
        set_wallet(plain, keys, "u-stored", ["citi-double-cash"], engine.catalog)
    finally:
        plain.close()
    stored = {key: value for key, value in SUPERMARKET.items() if key != "wallet"}
    items = [
        {**stored, "transaction_id": "b-1", "user_id": "u-stored"},
        {**stored, "transaction_id": "b-2", "user_id": "u-nobody"},
        {**SUPERMARKET, "transaction_id": "b-3", "user_id": "u-stored"},
        {**stored, "transaction_id": "b-4", "amount_usd": "abc"},
    ]

    with UvicornThread(create_app(engine, redis_url=redis_url, prefix=keys.prefix)) as running:
        response = httpx.post(f"{running.url}/recommend/batch", json={"transactions": items}, timeout=10)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [result["ok"] for result in results] == [True, True, True, False]
    assert results[0]["recommendation"]["wallet_source"] == "user"
    assert results[0]["recommendation"]["recommended_card"]["card_id"] == "citi-double-cash"
    assert results[1]["recommendation"]["wallet_source"] == "catalog"
    assert results[2]["recommendation"]["recommended_card"]["card_id"] == "amex-gold"
    assert results[3]["error"]["type"] == "validation_error"


def store(redis_url: str, write) -> None:
    plain = redis.Redis.from_url(redis_url)
    try:
        write(plain)
    finally:
        plain.close()


def recommend_both_ways(engine, redis_url, keys, items: list[dict]) -> list[dict]:
    """Post each item to /recommend and all of them to /recommend/batch; check both agree and return the single responses."""
    with UvicornThread(create_app(engine, redis_url=redis_url, prefix=keys.prefix)) as running:
        single = [httpx.post(f"{running.url}/recommend", json=item, timeout=10) for item in items]
        batch = httpx.post(f"{running.url}/recommend/batch", json=items, timeout=10)

    assert [response.status_code for response in single] == [200] * len(items)
    from_batch = [result["recommendation"] for result in batch.json()["results"]]
    for alone, together in zip(single, from_batch):
        assert alone.json()["recommended_card"] == together["recommended_card"]
        assert alone.json()["reasoning"] == together["reasoning"]
    return [response.json() for response in single]


def test_stored_valuations_apply_with_wallet(engine, redis_url, keys):
    """Amex Gold's $8.00 at 2.0 cents a point drops to $1.60 at 0.4 cents, below Double Cash's $2.00."""
    store(redis_url, lambda plain: plain.hset(keys.valuations("u-val"), "Amex Membership Rewards", "0.4"))

    valued, default = recommend_both_ways(engine, redis_url, keys, [
        {**SUPERMARKET, "transaction_id": "v-1", "user_id": "u-val"},
        {**SUPERMARKET, "transaction_id": "v-2", "user_id": "u-default"},
    ])

    assert valued["recommended_card"]["card_id"] == "citi-double-cash"
    assert valued["rewards"]["cash_value"] == 2.0
    assert default["recommended_card"]["card_id"] == "amex-gold"
    assert default["rewards"]["cash_value"] == 8.0


def test_stored_mode_applies(engine, redis_url, keys):
    store(redis_url, lambda plain: set_wallet(plain, keys, "u-mode", ["amex-gold", "citi-double-cash"],
                                              engine.catalog, mode="cashback"))
    request = {key: value for key, value in SUPERMARKET.items() if key != "wallet"}

    (answer,) = recommend_both_ways(engine, redis_url, keys, [{**request, "user_id": "u-mode"}])

    assert answer["wallet_source"] == "user"
    assert "cash back mode" in answer["reasoning"]


def test_invalid_stored_terms_ignored(engine, redis_url, keys):
    def write(plain):
        plain.set(keys.wallet("u-bad"), json.dumps({"cards": ["amex-gold", "citi-double-cash"], "mode": "bogus"}))
        plain.hset(keys.valuations("u-bad"), mapping={"No Such Program": "5", "Amex Membership Rewards": "lots"})

    store(redis_url, write)

    (answer,) = recommend_both_ways(engine, redis_url, keys, [{**SUPERMARKET, "user_id": "u-bad"}])

    assert answer["recommended_card"]["card_id"] == "amex-gold"
    assert answer["rewards"]["cash_value"] == 8.0
    assert "cash back mode" not in answer["reasoning"]


def test_health_reports_redis_and_prefix(engine, redis_url, keys):
    with UvicornThread(create_app(engine, redis_url=redis_url, prefix=keys.prefix)) as running:
        response = httpx.get(f"{running.url}/health", timeout=10)

    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["redis"] == "ok"
    assert response.json()["prefix"] == keys.prefix


def test_health_with_redis_down_is_503(engine):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there

    with UvicornThread(create_app(engine, redis_url=url)) as running:
        response = httpx.get(f"{running.url}/health", timeout=30)

    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["redis"] == "unreachable"
    assert response.headers["retry-after"] == "5"


def test_batch_with_redis_down_is_503(engine):
    """A batch whose wallets cannot be read gets a 503 for the whole batch, not results without wallets."""
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    item = {key: value for key, value in SUPERMARKET.items() if key != "wallet"}

    with UvicornThread(create_app(engine, redis_url=url)) as running:
        response = httpx.post(f"{running.url}/recommend/batch", json=[item], timeout=30)

    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["error"]["type"] == "wallet_lookup_failed"


@pytest.mark.parametrize(
    ("change", "field", "named_value"),
    [
        ({"amount_usd": "abc"}, "amount_usd", "'abc'"),
        ({"amount_usd": -5}, "amount_usd", "-5"),
        ({"mcc": "54x1"}, "mcc", "'54x1'"),
        ({"merchant": None}, "merchant", ""),
        ({"wallet": []}, "wallet", ""),
    ],
)
def test_recommend_invalid_field_gets_422(client, change, field, named_value):
    request = {**SUPERMARKET, **change}

    response = client.post("/recommend", json=request, headers=AUTH)

    assert response.status_code == 422
    error = response.json()["error"]
    assert [entry["field"] for entry in error["fields"]] == [field]
    assert error["message"].startswith(f"invalid request: {field}:")
    assert named_value in error["message"]
    assert response.json()["detail"][0]["loc"] == ["body", field]


def test_recommend_missing_field_gets_422(client):
    request = {key: value for key, value in SUPERMARKET.items() if key != "user_id"}

    response = client.post("/recommend", json=request, headers=AUTH)

    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "user_id"


def test_recommend_unknown_card_gets_422(client):
    response = client.post("/recommend", json={**SUPERMARKET, "wallet": ["amex-gould"]}, headers=AUTH)

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "unknown_card"
    assert error["fields"][0]["field"] == "wallet"
    assert "amex-gould" in error["message"]


def test_batch_keeps_order_and_item_errors(client):
    items = [
        SUPERMARKET,
        {**SUPERMARKET, "transaction_id": "t-2", "amount_usd": "not money"},
        {**SUPERMARKET, "transaction_id": "t-3", "merchant": "Nobu", "category": "dining", "mcc": "5812", "amount_usd": 5},
    ]

    response = client.post("/recommend/batch", json={"transactions": items}, headers=AUTH)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [result["index"] for result in results] == [0, 1, 2]
    assert [result["ok"] for result in results] == [True, False, True]
    assert results[0]["recommendation"]["transaction_id"] == "t-1"
    assert results[0]["recommendation"]["rewards"]["cash_value"] == 8.0
    assert results[1]["error"]["type"] == "validation_error"
    assert results[1]["error"]["fields"][0]["field"] == "amount_usd"
    assert "'not money'" in results[1]["error"]["message"]
    assert results[2]["recommendation"]["transaction_id"] == "t-3"
    assert results[2]["recommendation"]["rewards"]["points"] == 20  # $5 x 4 at a restaurant
    assert results[2]["recommendation"]["rewards"]["cash_value"] == 0.4


def test_batch_accepts_bare_list(client):
    response = client.post("/recommend/batch", json=[SUPERMARKET, {"user_id": "u-1"}], headers=AUTH)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [result["ok"] for result in results] == [True, False]
    missing = {entry["field"] for entry in results[1]["error"]["fields"]}
    assert missing == {"merchant", "amount_usd"}


def test_batch_unknown_card_fails_alone(client):
    items = [{**SUPERMARKET, "wallet": ["no-such-card"]}, SUPERMARKET]

    response = client.post("/recommend/batch", json=items, headers=AUTH)

    results = response.json()["results"]
    assert results[0]["ok"] is False
    assert results[0]["error"]["type"] == "unknown_card"
    assert results[1]["ok"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"transactions": 5}', "transactions"),
        (b'{"items": []}', "body"),
        (b"[1, 2", "body"),
    ],
)
def test_batch_invalid_body_gets_422(client, body, field):
    response = client.post("/recommend/batch", content=body, headers={**AUTH, "Content-Type": "application/json"})

    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == field


def test_batch_over_item_limit_gets_422(engine):
    items = [{"user_id": "u", "merchant": "m", "amount_usd": 1}] * (MAX_BATCH_ITEMS + 1)

    with UvicornThread(create_app(engine)) as running:
        response = httpx.post(f"{running.url}/recommend/batch", json=items, timeout=30)

    assert response.status_code == 422
    assert str(MAX_BATCH_ITEMS) in response.json()["error"]["message"]


def test_health_needs_no_key(client):
    response = client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert "/recommend" in body["endpoints"]
    assert "/recommend/batch" in body["endpoints"]
    assert "/mcp" in body["endpoints"]
    assert body["catalog_version"]


@pytest.mark.parametrize("path", ["/cards", "/openapi.json", "/docs"])
def test_get_routes_need_key(client, path):
    assert client.get(path).status_code == 401
    assert client.get(path, headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", f"Basic {API_KEY}", f"Bearer {API_KEY}x", "Bearer", f"Bearer{API_KEY}"],
)
def test_recommend_rejects_bad_key(client, authorization):
    headers = {"Authorization": authorization} if authorization else {}

    response = client.post("/recommend", json=SUPERMARKET, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert API_KEY not in response.text


def test_bearer_scheme_is_case_insensitive(client):
    response = client.post("/recommend", json=SUPERMARKET, headers={"Authorization": f"bearer {API_KEY}"})

    assert response.status_code == 200


def test_mcp_endpoint_needs_key(client):
    response = client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})

    assert response.status_code == 401


def test_no_key_configured_means_open(engine):
    with UvicornThread(create_app(engine)) as running:
        response = httpx.get(f"{running.url}/cards", timeout=10)

    assert response.status_code == 200


def test_large_body_with_content_length_gets_413(client):
    items = [SUPERMARKET] * 200
    body = json.dumps(items).encode()
    assert len(body) > 20_000

    response = client.post("/recommend/batch", content=body, headers={**AUTH, "Content-Type": "application/json"})

    assert response.status_code == 413
    assert "20000" in response.json()["error"]["message"]


def test_large_chunked_body_gets_413(client):
    chunk = b" " * 8_000

    def chunks():
        yield b"["
        for _ in range(4):
            yield chunk
        yield b"]"

    response = client.post("/recommend/batch", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})

    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413


def test_small_chunked_body_goes_through(client):
    def chunks():
        yield json.dumps([SUPERMARKET]).encode()

    response = client.post("/recommend/batch", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})

    assert response.status_code == 200
    assert response.json()["results"][0]["ok"] is True


def test_cards_lists_catalog(client, engine):
    response = client.get("/cards", headers=AUTH)

    assert response.status_code == 200
    cards = {card["card_id"]: card for card in response.json()["cards"]}
    assert set(cards) == {card.card_id for card in engine.catalog.cards}
    assert cards["amex-gold"]["issuer"] == "American Express"
    assert cards["amex-gold"]["card_name"] == "American Express Gold Card"


def test_openapi_documents_contract(client):
    document = client.get("/openapi.json", headers=AUTH).json()

    assert {"/recommend", "/recommend/batch", "/health", "/cards"} <= set(document["paths"])
    schemas = document["components"]["schemas"]
    assert {"user_id", "merchant", "amount_usd", "mcc", "wallet"} <= set(schemas["RecommendRequest"]["properties"])
    assert "recommended_card" in schemas["RecommendResponse"]["properties"]
    batch_body = document["paths"]["/recommend/batch"]["post"]["requestBody"]
    assert "oneOf" in batch_body["content"]["application/json"]["schema"]


def test_response_from_evaluation_matches_model_path():
    """The fast response path writes the same JSON as building the Recommendation model first."""
    import csv
    from pathlib import Path

    from rewardpilot.models import Transaction
    from rewardpilot.orchestrator.contract import RecommendResponse

    engine = RulesEngine.default()
    example = Path(__file__).resolve().parent.parent / "examples" / "transactions.csv"
    with example.open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:300]
    wallets = [None, ["amex-gold", "citi-double-cash"], ["amex-gold", "capital-one-savor"]]

    for index, row in enumerate(rows):
        transaction = Transaction(**{name: value or None for name, value in row.items()})
        wallet = wallets[index % len(wallets)]
        evaluation = engine.evaluate_or_fallback(transaction, wallet, wallet_source=None if wallet is None else "user")
        fast = RecommendResponse.from_evaluation(evaluation).model_dump_json()
        slow = RecommendResponse.from_recommendation(evaluation.to_model()).model_dump_json()

        assert json.loads(fast) == json.loads(slow)
