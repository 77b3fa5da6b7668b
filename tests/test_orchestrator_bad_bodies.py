"""Bodies the orchestrator cannot parse or encode back: each gets a 422 error body, never a 500.

A NaN or infinite amount and a string with a lone surrogate cannot be
written back as JSON, so the 422 quotes them as text. A body that is not
JSON, not UTF-8 or nested too deeply gets one body-level error on both
``/recommend`` and ``/recommend/batch``. Everything runs against a real
uvicorn server on 127.0.0.1.
"""

from __future__ import annotations

import json

import httpx
import pytest

from orchestrator_servers import UvicornThread
from rewardpilot.engine import RulesEngine
from rewardpilot.orchestrator import create_app

API_KEY = "bad-bodies-key-51"
JSON_HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

# A valid /recommend body with the merchant and amount left for each test to write.
FIELDS = ('"transaction_id": "t-1", "user_id": "u-1", "category": "groceries", "mcc": "5411", '
          '"wallet": ["amex-gold", "citi-double-cash"]')

NOT_JSON_MESSAGE = "the body is not valid JSON (Expecting value at line 1, column 1)"
DEEP_BODY = b"[" * 50_000 + b"]" * 50_000


def recommend_body(merchant: str = '"Whole Foods Market"', amount: str = "100") -> bytes:
    """Write a /recommend body by hand, because json.dumps cannot write NaN as the client sent it."""
    return f'{{{FIELDS}, "merchant": {merchant}, "amount_usd": {amount}}}'.encode()


def reject_constant(name: str):
    raise ValueError(f"the response contains the bare constant {name}, which is not JSON")


def strict_json(response: httpx.Response):
    """Parse a response as strict JSON: no NaN or Infinity, and UTF-8 only."""
    return json.loads(response.content.decode("utf-8"), parse_constant=reject_constant)


@pytest.fixture(scope="module")
def server():
    with UvicornThread(create_app(RulesEngine.default(), api_key=API_KEY)) as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.mark.parametrize(("amount", "shown"), [
    ("NaN", "nan"),
    ("Infinity", "inf"),
    ("-Infinity", "-inf"),
    ("1e400", "inf"),  # Python's json reads a number beyond the float range as infinity
])
def test_non_finite_amount_gets_422(client, amount, shown):
    response = client.post("/recommend", content=recommend_body(amount=amount), headers=JSON_HEADERS)

    assert response.status_code == 422
    body = strict_json(response)
    error = body["error"]
    assert error["type"] == "validation_error"
    assert [field["field"] for field in error["fields"]] == ["amount_usd"]
    assert f"amount_usd {shown} is not a finite number" in error["message"]
    assert body["detail"][0]["loc"] == ["body", "amount_usd"]
    assert body["detail"][0]["input"] == shown


@pytest.mark.parametrize("field", ["merchant", "user_id"])
def test_lone_surrogate_gets_422(client, field):
    raw = {"merchant": '"Whole Foods Market"', "user_id": '"u-1"'}
    raw[field] = '"W\\ud800"'
    content = f'{{"transaction_id": "t-1", "user_id": {raw["user_id"]}, "merchant": {raw["merchant"]}, ' \
              f'"amount_usd": 5}}'.encode()

    response = client.post("/recommend", content=content, headers=JSON_HEADERS)

    assert response.status_code == 422
    body = strict_json(response)
    error = body["error"]
    assert [entry["field"] for entry in error["fields"]] == [field]
    assert "(got 'W\\ud800')" in error["message"]
    assert body["detail"][0]["input"] == "W\\ud800"


@pytest.mark.parametrize("path", ["/recommend", "/recommend/batch"])
def test_invalid_json_is_body_error(client, path):
    response = client.post(path, content=b"xx{", headers=JSON_HEADERS)

    assert response.status_code == 422
    error = strict_json(response)["error"]
    assert error["type"] == "validation_error"
    assert error["fields"] == [{"field": "body", "message": NOT_JSON_MESSAGE}]
    assert error["message"].startswith(f"invalid request: body: {NOT_JSON_MESSAGE}.")


def test_invalid_json_same_on_both_routes(client):
    single = client.post("/recommend", content=b'{"user_id": "u-1",', headers=JSON_HEADERS)
    batch = client.post("/recommend/batch", content=b'{"user_id": "u-1",', headers=JSON_HEADERS)

    assert single.status_code == batch.status_code == 422
    assert strict_json(single) == strict_json(batch)
    assert "line 1, column 19" in strict_json(single)["error"]["message"]


@pytest.mark.parametrize("path", ["/recommend", "/recommend/batch"])
@pytest.mark.parametrize("content", [DEEP_BODY, b'{"transactions": ' + DEEP_BODY + b"}"])
def test_deeply_nested_body_gets_422(client, path, content):
    response = client.post(path, content=content, headers=JSON_HEADERS)

    assert response.status_code == 422
    error = strict_json(response)["error"]
    assert [field["field"] for field in error["fields"]] == ["body"]
    assert "nests arrays or objects too deeply" in error["message"]


@pytest.mark.parametrize("path", ["/recommend", "/recommend/batch"])
def test_body_not_utf8_gets_422(client, path):
    response = client.post(path, content=b'\x80{"user_id": "u-1"}', headers=JSON_HEADERS)

    assert response.status_code == 422
    error = strict_json(response)["error"]
    assert [field["field"] for field in error["fields"]] == ["body"]
    assert "byte 0 is not valid utf-8" in error["message"]
    assert "send UTF-8 text" in error["message"]


def test_text_plain_body_names_content_type(client):
    headers = {**JSON_HEADERS, "Content-Type": "text/plain"}

    response = client.post("/recommend", content=b"\xff\xfe{", headers=headers)

    assert response.status_code == 422
    body = strict_json(response)
    assert [field["field"] for field in body["error"]["fields"]] == ["body"]
    assert "Content-Type is 'text/plain'" in body["error"]["message"]
    assert "send Content-Type: application/json" in body["error"]["message"]
    assert "input" not in body["detail"][0]


def test_batch_bad_items_fail_alone(client):
    items = ",".join([
        recommend_body(amount="NaN").decode(),
        recommend_body(merchant='"W\\ud800"').decode(),
        recommend_body().decode(),
    ])

    response = client.post("/recommend/batch", content=f"[{items}]".encode(), headers=JSON_HEADERS)

    assert response.status_code == 200
    results = strict_json(response)["results"]
    assert [result["ok"] for result in results] == [False, False, True]
    assert "amount_usd nan is not a finite number" in results[0]["error"]["message"]
    assert results[1]["error"]["fields"][0]["field"] == "merchant"
    assert "(got 'W\\ud800')" in results[1]["error"]["message"]
    assert results[2]["recommendation"]["recommended_card"]["card_id"] == "amex-gold"


def test_valid_body_still_recommended(client):
    response = client.post("/recommend", content=recommend_body(), headers=JSON_HEADERS)

    assert response.status_code == 200
    assert strict_json(response)["recommended_card"]["card_id"] == "amex-gold"


def mcp_post(client: httpx.Client, content: bytes, session_id: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
    if session_id:
        headers["Mcp-Session-Id"] = session_id
    return client.post("/mcp", content=content, headers=headers)


def test_mcp_bad_arguments_are_errors(client):
    """Send raw JSON-RPC, because an MCP client rejects NaN or a lone surrogate."""
    opened = mcp_post(client, b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": '
                              b'"2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}')
    assert opened.status_code == 200
    session_id = opened.headers.get("mcp-session-id")
    assert mcp_post(client, b'{"jsonrpc": "2.0", "method": "notifications/initialized"}', session_id).status_code == 202

    call = b'{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "recommend_card", "arguments": %s}}'
    nan = mcp_post(client, call % b'{"user_id": "u-1", "merchant": "W", "amount_usd": NaN}', session_id)
    surrogate = mcp_post(client, call % b'{"user_id": "u-1", "merchant": "W\\ud800", "amount_usd": 5}', session_id)

    assert nan.status_code == 200
    result = strict_json(nan)["result"]
    assert result["isError"] is True
    assert "amount_usd nan is not a finite number" in result["content"][0]["text"]
    assert surrogate.status_code == 400  # the MCP transport rejects the JSON-RPC message itself
    assert strict_json(surrogate)["error"]["code"] == -32700
