"""Foreign purchases get the same card and cash in-process and through a real `rewardpilot orchestrator`.

The consumer's request carries every transaction field the engine reads:
currency, merchant country, card used and conversion. It does so over the
REST batch and single endpoints and over MCP. So a purchase abroad earns no
U.S.-only bonus and pays the card's foreign transaction fee on every path.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, free_port, one_server, run_cli
from consumer.recommenders.base import WorkItem
from consumer.recommenders.http import HttpRecommender, request_body
from consumer.recommenders.mcp import McpRecommender, tool_arguments
from mcp.server.mcpserver import MCPServer
from orchestrator_servers import UvicornThread
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Recommendation, Transaction
from rewardpilot.orchestrator.contract import RecommendRequest

FX_WALLET = ("wells-fargo-active-cash", "capital-one-venture-x", "amex-blue-cash-preferred", "amex-gold")

# EUR 100.00 at a French grocery store, converted at 1.0850 USD per EUR.
CONVERTED_IN_FRANCE = Transaction(
    transaction_id="fx-1", user_id="u-fx", merchant="Carrefour", amount_usd="108.50", mcc="5411",
    timestamp="2026-06-01T12:00:00Z", currency="EUR", merchant_country="FR",
    original_amount=Decimal("100.00"), original_currency="EUR", usd_per_unit=Decimal("1.0850"),
    rate_date=date(2026, 1, 1),
)
# A USD amount in France, paid with a card that charges a foreign transaction fee.
PAID_IN_FRANCE = Transaction(
    transaction_id="fx-2", user_id="u-fx", merchant="Carrefour", amount_usd="100.00", mcc="5411",
    timestamp="2026-06-02T12:00:00Z", merchant_country="FR", card_used="amex-blue-cash-preferred",
)
# A GBP amount that was not converted (the currency alone marks the purchase as foreign).
IN_POUNDS = Transaction(
    transaction_id="fx-3", user_id="u-fx", merchant="Pret A Manger", amount_usd="40.00", mcc="5812",
    timestamp="2026-06-03T12:00:00Z", currency="GBP",
)
# Amex Gold alone at a Costco warehouse: no card of the wallet is accepted, so the catalog's best wins.
NOT_ACCEPTED = Transaction(
    transaction_id="fx-4", user_id="u-fx", merchant="Costco Wholesale", amount_usd="80.00", mcc="5300",
    timestamp="2026-06-04T12:00:00Z",
)

ITEMS = [
    WorkItem(CONVERTED_IN_FRANCE, FX_WALLET, "user"),
    WorkItem(PAID_IN_FRANCE, FX_WALLET, "run"),
    WorkItem(IN_POUNDS, FX_WALLET, "user"),
    WorkItem(NOT_ACCEPTED, ("amex-gold",), "user"),
]


@pytest.fixture(scope="module")
def engine():
    return RulesEngine.default()


def start_orchestrator(global_options: list[str], options: list[str], env: dict[str, str],
                       log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start `rewardpilot orchestrator` on a free port, logging to ``log_path``, and wait for GET /health to return 200."""
    port = free_port()
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "rewardpilot.cli", *global_options, "orchestrator", "--port", str(port),
             "--uvicorn-log-level", "warning", *options],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):  # at most about 30 s
        if process.poll() is not None:
            log_text = log_path.read_text(encoding="utf-8")[-2000:]
            raise RuntimeError(f"rewardpilot orchestrator exited with {process.returncode}: {log_text}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)  # not listening yet
    stop(process)
    raise RuntimeError(f"rewardpilot orchestrator did not return 200 to GET /health on {url} within 30 s")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def orchestrator_url(tmp_path_factory):
    """A `rewardpilot orchestrator --no-wallets` process: it judges each request against the wallet sent."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    log_path = tmp_path_factory.mktemp("orchestrator") / "orchestrator.log"
    process, url = start_orchestrator([], ["--no-wallets"], env, log_path)
    try:
        yield url
    finally:
        stop(process)


async def recommend_through(url: str, path: str, items: list[WorkItem]) -> list:
    if path == "mcp":
        recommender = McpRecommender(f"{url}/mcp")
    else:
        recommender = HttpRecommender(url)
    try:
        if path == "single":
            await recommender.connect()
            # The bundled server lists /recommend/batch, so this makes the client send one POST /recommend each.
            recommender._batch_supported = False
        return await recommender.recommend(items)
    finally:
        await recommender.aclose()


def in_process(engine: RulesEngine, item: WorkItem) -> Recommendation:
    wallet = list(item.wallet) if item.wallet is not None else None
    return engine.evaluate_or_fallback(item.transaction, wallet, wallet_source=item.wallet_source).to_model()


# What goes on the wire


def test_request_body_carries_every_field():
    item = WorkItem(CONVERTED_IN_FRANCE.model_copy(update={"card_used": "amex-gold"}), FX_WALLET, "user")

    body = request_body(item)

    assert set(Transaction.model_fields) <= set(body)
    assert body["currency"] == "EUR"
    assert body["merchant_country"] == "FR"
    assert body["original_amount"] == "100.00"
    assert body["usd_per_unit"] == "1.0850"
    assert body["rate_date"] == "2026-01-01"
    assert RecommendRequest.model_validate(json.loads(json.dumps(body))).to_transaction() == item.transaction


def test_tool_arguments_carry_every_field():
    item = WorkItem(CONVERTED_IN_FRANCE.model_copy(update={"card_used": "amex-gold"}), FX_WALLET, "user")

    arguments = tool_arguments(item)

    assert set(Transaction.model_fields) <= set(arguments)
    assert arguments["wallet_source"] == "user"
    assert RecommendRequest.model_validate(arguments).to_transaction() == item.transaction


def test_unset_facts_are_left_out():
    body = request_body(WorkItem(IN_POUNDS, None, "catalog"))

    assert body["currency"] == "GBP"
    for name in ("merchant_country", "card_used", "original_amount", "original_currency", "usd_per_unit",
                 "rate_date", "wallet", "wallet_source"):
        assert name not in body


# The same recommendations in-process and through the orchestrator


def test_in_process_reference_values(engine):
    """Pin the in-process results that the comparisons below rely on, computed by hand."""
    converted = in_process(engine, ITEMS[0])
    # Amex Gold's 4x is for U.S. supermarkets only, so Venture X wins: 108.50 x 2 miles x 1.85 cents.
    assert converted.recommended_card.card_id == "capital-one-venture-x"
    assert converted.rewards.cash_value_usd == Decimal("4.01")
    assert "100.00 EUR converted to $108.50" in converted.reasoning

    assert in_process(engine, ITEMS[1]).rewards.cash_value_usd == Decimal("3.70")  # 100 x 2 x 1.85 cents
    assert in_process(engine, ITEMS[3]).wallet_source == "catalog"


@pytest.mark.parametrize("path", ["batch", "single", "mcp"])
async def test_foreign_purchase_matches_in_process(orchestrator_url, engine, path):
    outcomes = await recommend_through(orchestrator_url, path, ITEMS)

    for item, outcome in zip(ITEMS, outcomes, strict=True):
        expected = in_process(engine, item)
        transaction_id = item.transaction.transaction_id
        assert isinstance(outcome, Recommendation), (transaction_id, outcome)
        assert outcome.recommended_card == expected.recommended_card, transaction_id
        assert outcome.rewards.cash_value_usd == expected.rewards.cash_value_usd, transaction_id
        assert outcome.rewards.effective_rate == expected.rewards.effective_rate, transaction_id
        assert outcome.reasoning == expected.reasoning, transaction_id
        assert outcome.confidence == expected.confidence, transaction_id
        assert outcome.wallet_source == expected.wallet_source, transaction_id
        assert outcome.passed_over == expected.passed_over, transaction_id
        assert outcome.card_used == expected.card_used, transaction_id
        assert [(alt.card, alt.rewards.cash_value_usd, alt.note) for alt in outcome.alternatives] == \
            [(alt.card, alt.rewards.cash_value_usd, alt.note) for alt in expected.alternatives], transaction_id


# An older MCP server whose recommend_card tool lacks the newer arguments


def older_mcp_app():
    """Build an MCP server whose recommend_card tool lacks the purchase-fact arguments and returns 2% cash back."""
    server = MCPServer(name="older-orchestrator", log_level="WARNING")

    @server.tool()
    async def recommend_card(user_id: str, merchant: str, amount_usd: float | str, category: str = "",
                             mcc: str | None = None, transaction_id: str | None = None,
                             timestamp: str | None = None, wallet: list[str] | None = None) -> dict:
        cash = (Decimal(str(amount_usd)) * Decimal("0.02")).quantize(Decimal("0.01"))
        return {"transaction_id": transaction_id, "recommended_card": {"card_id": "flat-2", "card_name": "Flat 2%"},
                "rewards": {"points": str(cash), "cash_value": str(cash)}, "confidence": 0.9,
                "reasoning": f"2% everywhere, wallet {wallet}"}

    return server.streamable_http_app(streamable_http_path="/mcp", stateless_http=True, json_response=True)


async def test_older_mcp_tool_ignores_new_arguments():
    with UvicornThread(older_mcp_app()) as older:
        [outcome] = await recommend_through(older.url, "mcp", [ITEMS[0]])

    assert isinstance(outcome, Recommendation), outcome
    assert outcome.recommended_card.card_id == "flat-2"
    assert outcome.rewards.cash_value_usd == Decimal("2.17")  # 108.50 x 2%
    assert str(list(FX_WALLET)) in outcome.reasoning


# The command line: `run --fx-rates`, then `replay --orchestrator --compare`


@one_server
def test_replay_through_orchestrator_matches_run(cli_env, keys, tmp_path):
    prefix = ["--prefix", keys.prefix]
    rates = tmp_path / "rates.csv"
    rates.write_text("currency,usd_per_unit,date\nEUR,1.0850,2026-01-01\n", encoding="utf-8")
    purchases = tmp_path / "foreign.jsonl"
    purchases.write_text(
        '{"transaction_id":"t4-1","user_id":"u-fx","merchant":"Carrefour","amount_usd":"100.00","mcc":"5411",'
        '"timestamp":"2026-06-01T12:00:00Z","currency":"EUR","merchant_country":"FR"}\n'
        '{"transaction_id":"t4-4","user_id":"u-fx","merchant":"Carrefour","amount_usd":"100.00","mcc":"5411",'
        '"timestamp":"2026-06-02T12:00:00Z","merchant_country":"FR","card_used":"amex-blue-cash-preferred"}\n',
        encoding="utf-8",
    )
    completed = run_cli([*prefix, "wallet", "set", "u-fx", *FX_WALLET], cli_env)
    assert completed.returncode == 0, completed.stderr[-2000:]
    completed = run_cli([*prefix, "run", str(purchases), "--job", "fx", "--fx-rates", str(rates)], cli_env)
    assert completed.returncode == 0, completed.stderr[-2000:]

    process, url = start_orchestrator(prefix, [], cli_env, tmp_path / "orchestrator.log")
    try:
        completed = run_cli([*prefix, "replay", "--job", "fx", "--start", "0", "--run", "o1",
                             "--orchestrator", url, "--compare", "--json"], cli_env)
    finally:
        stop(process)

    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["results"] == 2
    assert summary["comparison"]["compared"] == 2
    assert summary["comparison"]["differing"] == 0, summary
    assert summary["comparison"]["total_change_usd"] == "0.00"
