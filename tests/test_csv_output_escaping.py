"""``run --output FILE.csv`` writes text that starts like a spreadsheet formula with a leading single quote.

Merchant names come from bank exports, so an outside party can make one
start with ``=``. The quote makes a spreadsheet show the cell as text.
Numbers are never escaped, so a negative amount stays a number.
"""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import invoke_cli, one_server
from rewardpilot.cli.output import CSV_COLUMNS, FORMULA_ESCAPED_COLUMNS, csv_row, escape_formula, write_results
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction

ENGINE = RulesEngine.default()
WALLET = ["amex-gold", "citi-double-cash"]
INPUT_COLUMNS = ["transaction_id", "user_id", "merchant", "category", "amount_usd", "mcc", "timestamp"]


def purchase(**changes) -> Transaction:
    fields = dict(transaction_id="p1", user_id="u1", merchant="KROGER #512", category="groceries",
                  amount_usd="25.00", mcc="5411", timestamp="2026-11-12T13:00:00Z")
    return Transaction(**{**fields, **changes})


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("text", [
    '=HYPERLINK("http://x")', "+1+2", "-2+3", "@SUM(A1:A2)", "\tTAB", "\rCR", "\0NUL",
])
def test_escape_formula_prefixes_quote(text):
    assert escape_formula(text) == "'" + text


@pytest.mark.parametrize("text", ["KROGER #512", "", "'=already quoted", "Café = bar", "1-800-FLOWERS", " =space first"])
def test_escape_formula_keeps_plain_text(text):
    assert escape_formula(text) == text


def test_escaped_columns_exist():
    assert FORMULA_ESCAPED_COLUMNS <= set(CSV_COLUMNS)
    for column in ("merchant", "transaction_id", "user_id", "reasoning"):
        assert column in FORMULA_ESCAPED_COLUMNS


def test_number_columns_not_escaped():
    for column in ("amount_usd", "rewards_amount", "cash_value_usd", "effective_rate", "confidence"):
        assert column not in FORMULA_ESCAPED_COLUMNS


def test_csv_row_escapes_input_text():
    result = ENGINE.recommend(
        purchase(transaction_id="=t1", user_id="@u1", merchant='=HYPERLINK("http://x")'), WALLET,
    )

    row = csv_row(result)

    assert row["merchant"] == '\'=HYPERLINK("http://x")'
    assert row["transaction_id"] == "'=t1"
    assert row["user_id"] == "'@u1"


def test_csv_row_escapes_reasoning():
    result = ENGINE.recommend(purchase(), WALLET).model_copy(update={"reasoning": "-cmd|' /C calc'!A0"})

    assert csv_row(result)["reasoning"] == "'-cmd|' /C calc'!A0"


def test_csv_row_keeps_negative_amount():
    result = ENGINE.recommend(purchase(), WALLET).model_copy(update={"amount_usd": Decimal("-12.50")})

    row = csv_row(result)

    assert row["amount_usd"] == Decimal("-12.50")
    assert isinstance(row["amount_usd"], Decimal)


def test_csv_row_keeps_plain_merchant():
    assert csv_row(ENGINE.recommend(purchase(), WALLET))["merchant"] == "KROGER #512"


def test_write_results_csv_file(tmp_path):
    path = tmp_path / "out.csv"
    results = [
        ENGINE.recommend(purchase(transaction_id="t1", merchant='=HYPERLINK("http://x")'), WALLET),
        ENGINE.recommend(purchase(transaction_id="t2", merchant="+SUM(1,2)"), WALLET),
        ENGINE.recommend(purchase(transaction_id="t3", merchant="Trader Joe's"), WALLET),
    ]
    results[2] = results[2].model_copy(update={"amount_usd": Decimal("-4.00")})

    assert write_results(results, path) == 3

    rows = read_csv(path)
    assert [row["merchant"] for row in rows] == ['\'=HYPERLINK("http://x")', "'+SUM(1,2)", "Trader Joe's"]
    assert rows[2]["amount_usd"] == "-4.00"


def test_write_results_jsonl_unchanged(tmp_path):
    path = tmp_path / "out.jsonl"

    write_results([ENGINE.recommend(purchase(merchant="=1+1"), WALLET)], path)

    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["merchant"] == "=1+1"


@one_server
def test_run_output_csv_escapes(cli_env, keys, tmp_path):
    source = tmp_path / "misc.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(INPUT_COLUMNS)
        writer.writerow(["m1", "u1", '=HYPERLINK("http://x")', "groceries", "25.00", "5411", "2026-11-12T13:00:00Z"])
        writer.writerow(["m2", "u1", "@SUM(A1:A9)", "groceries", "30.00", "5411", "2026-11-12T14:00:00Z"])
        writer.writerow(["-m3", "u1", "-2+3", "groceries", "12.00", "5411", "2026-11-12T15:00:00Z"])
        writer.writerow(["m4", "u1", "Whole Foods", "groceries", "40.00", "5411", "2026-11-12T16:00:00Z"])
    output = tmp_path / "misc.out.csv"

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--job", "escape", "-o", str(output),
                            "--wallet", "amex-gold"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    merchants = {row["transaction_id"]: row["merchant"] for row in read_csv(output)}
    assert merchants == {
        "m1": '\'=HYPERLINK("http://x")',
        "m2": "'@SUM(A1:A9)",
        "'-m3": "'-2+3",
        "m4": "Whole Foods",
    }
    amounts = sorted(Decimal(row["amount_usd"]) for row in read_csv(output))
    assert amounts == [Decimal("12.00"), Decimal("25.00"), Decimal("30.00"), Decimal("40.00")]
