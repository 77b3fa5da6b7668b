"""The orchestrator's MCP tools, through an MCP client session over streamable HTTP."""

from __future__ import annotations

import httpx2
import pytest

from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from orchestrator_servers import UvicornThread
from rewardpilot.engine import RulesEngine
from rewardpilot.orchestrator import create_app

API_KEY = "mcp-test-key-77"


@pytest.fixture(scope="module")
def server():
    with UvicornThread(create_app(RulesEngine.default(), api_key=API_KEY)) as running:
        yield running


def session(server, key: str = API_KEY) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return Client(streamable_http_client(f"{server.url}/mcp", http_client=http))


async def test_list_tools_shows_both(server):
    async with session(server) as client:
        tools = await client.list_tools()

    names = {tool.name for tool in tools.tools}
    assert names == {"recommend_card", "list_cards"}
    schema = next(tool.input_schema for tool in tools.tools if tool.name == "recommend_card")
    assert {"user_id", "merchant", "amount_usd"} <= set(schema["required"])


async def test_recommend_card_supermarket(server):
    arguments = {
        "user_id": "u-1",
        "merchant": "Whole Foods Market",
        "category": "groceries",
        "amount_usd": "100.00",
        "mcc": "5411",
        "transaction_id": "t-mcp-1",
        "wallet": ["amex-gold", "citi-double-cash"],
    }

    async with session(server) as client:
        result = await client.call_tool("recommend_card", arguments)

    assert result.is_error is False
    answer = result.structured_content
    assert answer["transaction_id"] == "t-mcp-1"
    assert answer["recommended_card"]["card_id"] == "amex-gold"
    assert answer["rewards"]["points"] == 400  # $100 x 4
    assert answer["rewards"]["cash_value"] == 8.0  # 400 x 2.0 cents


async def test_recommend_card_invalid_amount(server):
    arguments = {"user_id": "u-1", "merchant": "Whole Foods", "amount_usd": "-3"}

    async with session(server) as client:
        result = await client.call_tool("recommend_card", arguments)

    assert result.is_error is True
    text = "".join(block.text for block in result.content)
    assert "amount_usd" in text
    assert "-3" in text


async def test_recommend_card_unknown_card(server):
    arguments = {"user_id": "u-1", "merchant": "Whole Foods", "amount_usd": 10, "wallet": ["amex-gould"]}

    async with session(server) as client:
        result = await client.call_tool("recommend_card", arguments)

    assert result.is_error is True
    assert "amex-gould" in "".join(block.text for block in result.content)


async def test_list_cards(server):
    async with session(server) as client:
        result = await client.call_tool("list_cards", {})

    assert result.is_error is False
    cards = {card["card_id"]: card for card in result.structured_content["cards"]}
    assert cards["amex-gold"]["issuer"] == "American Express"
    assert len(cards) == len(RulesEngine.default().catalog.cards)


async def test_wrong_key_fails_session(server):
    with pytest.raises(BaseException) as failure:
        async with session(server, key="wrong") as client:
            await client.list_tools()

    # The SDK reports the HTTP 401 as an MCPError without the status.
    leaf = failure.value
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, MCPError)
