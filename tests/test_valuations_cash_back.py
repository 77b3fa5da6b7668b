"""Cash back is worth its face value: no user valuation may change it.

A cash back card earns dollars, so the program "cash back" is fixed at 1 cent
per cent. `valuations set` rejects it, and an override stored before that
check (or written to Redis directly) is left out by the consumer, the
orchestrator, the report and `valuations show`.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest

from conftest import add_with_result, invoke_cli, one_server
from rewardpilot import wallets
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction
from rewardpilot.orchestrator.contract import RecommendRequest
from rewardpilot.orchestrator.service import RecommendService
from rewardpilot.report import build_report
from rewardpilot.user_terms import (
    CASH_BACK_PROGRAM, FixedValuationError, StoredTerms, check_settable_program, usable_valuations,
)

ENGINE = RulesEngine.default()
CASH_CARD = "wells-fargo-active-cash"  # 2% cash back on every purchase
GAS = dict(merchant="SHELL OIL 5744", amount_usd="100.00", mcc="5541", timestamp="2026-11-10T13:00:00Z")


class Warnings:
    """A ``Warn`` callable that records each call as (key, message, fields)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict]] = []

    def __call__(self, key: str, message: str, **fields) -> None:
        self.calls.append((key, message, fields))


def test_engine_names_cash_back_program():
    cash_cards = [card for card in ENGINE.catalog.cards if card.unit == "USD"]

    assert cash_cards
    assert {card.program for card in cash_cards} == {CASH_BACK_PROGRAM}
    assert CASH_BACK_PROGRAM in ENGINE.valuations.programs
    assert ENGINE.valuations.programs[CASH_BACK_PROGRAM].cents_per_point == Decimal("1.0")


def test_check_settable_rejects_cash_back():
    with pytest.raises(FixedValuationError) as caught:
        check_settable_program("cash back")

    assert "'cash back'" in str(caught.value)
    assert "face value" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("program", ["Amex Membership Rewards", "Chase Ultimate Rewards (cash back)", "Cash Back"])
def test_check_settable_allows_others(program):
    check_settable_program(program)


def test_usable_valuations_drop_cash_back():
    warn = Warnings()

    usable = usable_valuations(ENGINE, {"cash back": "5", "Amex Membership Rewards": "1.4"}, "u1", warn)

    assert usable == {"Amex Membership Rewards": "1.4"}
    assert len(warn.calls) == 1
    key, message, fields = warn.calls[0]
    assert key == "valuation-cash-back"
    assert "face value" in message
    assert fields == {"user_id": "u1", "program": "cash back", "stored_cents": "5"}


def test_usable_valuations_only_cash_back():
    assert usable_valuations(ENGINE, {"cash back": "1"}, "u1", Warnings()) is None


async def test_orchestrator_ignores_cash_back():
    service = RecommendService(ENGINE)
    request = RecommendRequest(user_id="u1", wallet=[CASH_CARD], **GAS)

    evaluation = await service.evaluate(request, {"u1": StoredTerms(valuations={"cash back": "5"})})
    response = evaluation.to_model()

    assert response.recommended_card.card_id == CASH_CARD
    assert response.rewards.amount == Decimal("2.00")
    assert response.rewards.cash_value_usd == Decimal("2.00")


def test_report_ignores_cash_back(sync_client, keys):
    wallets.set_wallet(sync_client, keys, "u1", [CASH_CARD], ENGINE.catalog)
    sync_client.hset(keys.valuations("u1"), CASH_BACK_PROGRAM, "5")
    transaction = Transaction(transaction_id="t1", user_id="u1", card_used=CASH_CARD, **GAS)
    add_with_result(sync_client, keys, transaction, [CASH_CARD], ENGINE)

    report = build_report(sync_client, keys, "u1", month="2026-11", today=date(2026, 11, 30))

    assert report.purchases == 1
    assert report.total.earned == Decimal("2.00")
    assert report.total.best == Decimal("2.00")


@one_server
def test_cli_set_cash_back_rejected(keys, sync_client, cli_env):
    completed = invoke_cli(["--prefix", keys.prefix, "valuations", "set", "u1", "cash back", "5"], cli_env)

    output = completed.stdout + completed.stderr
    assert completed.returncode == 2, output
    assert "'cash back'" in output
    assert "face value" in output
    assert sync_client.exists(keys.valuations("u1")) == 0


@one_server
def test_cli_show_flags_stored_cash_back(keys, sync_client, cli_env):
    sync_client.hset(keys.valuations("u1"), mapping={CASH_BACK_PROGRAM: "5", "Amex Membership Rewards": "1.4"})

    completed = invoke_cli(["--prefix", keys.prefix, "valuations", "show", "u1", "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr
    rows = json.loads(completed.stdout)
    assert rows[CASH_BACK_PROGRAM] == {"cents_per_point": "1.0", "source": "default"}
    assert rows["Amex Membership Rewards"] == {"cents_per_point": "1.4", "source": "user"}
    assert "ignored" in completed.stderr
    assert "face value" in completed.stderr
    assert f"--prefix {keys.prefix} valuations unset u1 'cash back'" in completed.stderr


@one_server
def test_cli_unset_returns_default(keys, sync_client, cli_env):
    sync_client.hset(keys.valuations("u1"), mapping={CASH_BACK_PROGRAM: "5", "Amex Membership Rewards": "1.4"})

    completed = invoke_cli(["--prefix", keys.prefix, "valuations", "unset", "u1", CASH_BACK_PROGRAM,
                            "Chase Ultimate Rewards"], cli_env)

    assert completed.returncode == 0, completed.stderr
    assert "u1: cash back now uses the default" in completed.stderr
    assert "u1: Chase Ultimate Rewards had no stored value" in completed.stderr
    assert sync_client.hgetall(keys.valuations("u1")) == {"Amex Membership Rewards": "1.4"}


@one_server
def test_cli_unset_invalid_user(keys, cli_env):
    completed = invoke_cli(["--prefix", keys.prefix, "valuations", "unset", "", "Amex Membership Rewards"], cli_env)

    assert completed.returncode == 2
    assert "error:" in completed.stderr


@one_server
def test_run_values_cash_back_at_face(keys, sync_client, cli_env, tmp_path):
    """A $100 gas purchase on Active Cash earns $2.00, whatever value was stored for cash back."""
    assert invoke_cli(["--prefix", keys.prefix, "wallet", "set", "u1", CASH_CARD], cli_env).returncode == 0
    sync_client.hset(keys.valuations("u1"), CASH_BACK_PROGRAM, "5")
    source = tmp_path / "gas.jsonl"
    source.write_text(json.dumps({"transaction_id": "g1", "user_id": "u1", **GAS}) + "\n", encoding="utf-8")

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--job", "gas", "--json", "--keep", "1h"],
                           cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads(completed.stdout)
    assert summary["successful"] == 1
    assert summary["total_rewards"] == "2.00"


def test_engine_rejects_cash_back_valuation():
    """A caller of the Python API gets the same error as `valuations set`, not a cash value times five."""
    purchase = Transaction(transaction_id="t-cb", user_id="u1", merchant="Kroger", amount_usd="100", mcc="5411",
                           timestamp="2026-05-01T12:00:00Z")

    with pytest.raises(FixedValuationError) as caught:
        ENGINE.recommend(purchase, ["amex-blue-cash-preferred"], valuations={CASH_BACK_PROGRAM: "5"})

    assert "cannot be set: cash back is paid in dollars" in str(caught.value)
    assert isinstance(caught.value, ValueError)
    plain = ENGINE.recommend(purchase, ["amex-blue-cash-preferred"])
    assert plain.rewards.cash_value_usd == Decimal("6.00")
