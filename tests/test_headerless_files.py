"""Files without a header row, read through a layout whose ``header`` names their columns."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from conftest import SHARED_DATA, invoke_cli, one_server
from producer import InputError, Rejected, Row, Skipped, load_layout, read_transactions
from producer.layouts import Layout

needs_samples = pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared sample data is not available")

CARD_LAYOUT = """
name: card-export
header: [Date, Description, Amount, Unused, Balance]
columns:
  transaction_id: "card-{#line}-{#row_hash}"
  merchant: Description
  amount_usd: Amount
  timestamp: Date
constants:
  user_id: me
  category: restaurants
timestamp_formats: ["%m/%d/%Y"]
"""

CHECKING_LAYOUT = """
name: checking
header: [Date, Check number, Description, Debit, Credit, Balance]
columns:
  transaction_id: "chk-{#line}-{#row_hash}"
  merchant: Description
  timestamp: Date
debit_column: Debit
credit_column: Credit
constants:
  user_id: me
  category: other
timestamp_formats: ["%m/%d/%Y"]
"""

ROWS = "01/09/2015,05354 SUBWAY,8.19,,1000.00\n02/18/2015,WENDY'S #6338,8.55,,1000.00\n"


def layout_file(tmp_path, text: str):
    path = tmp_path / "layout.yaml"
    path.write_text(text)
    return path


def read(data: bytes, layout: Layout, **options) -> list:
    return list(read_transactions(io.BytesIO(data), layout=layout, **options))


def read_card_export(tmp_path, data: bytes) -> list:
    """Read ``data`` through the card-export layout, whose header names the five columns."""
    return read(data, load_layout(layout_file(tmp_path, CARD_LAYOUT)))


def of_kind(outcomes: list, kind: type) -> list:
    return [outcome for outcome in outcomes if isinstance(outcome, kind)]


def layout_error(tmp_path, text: str) -> str:
    with pytest.raises(InputError) as raised:
        load_layout(layout_file(tmp_path, text))
    return str(raised.value)


def test_first_line_read_as_data(tmp_path):
    outcomes = read_card_export(tmp_path, ROWS.encode())

    rows = of_kind(outcomes, Row)
    assert len(outcomes) == 2
    assert [row.line for row in rows] == [1, 2]
    assert rows[0].transaction.merchant == "05354 SUBWAY"
    assert rows[0].transaction.amount_usd == Decimal("8.19")
    assert rows[0].transaction.timestamp.date() == datetime(2015, 1, 9, tzinfo=timezone.utc).date()


def test_header_row_present_is_skipped(tmp_path):
    data = ("date,description,amount,unused,balance\n" + ROWS).encode()

    outcomes = read_card_export(tmp_path, data)

    rows = of_kind(outcomes, Row)
    assert len(outcomes) == 2
    assert [row.line for row in rows] == [2, 3]


def test_header_only_on_first_line(tmp_path):
    data = (ROWS + "Date,Description,Amount,Unused,Balance\n").encode()

    outcomes = read_card_export(tmp_path, data)

    assert len(of_kind(outcomes, Row)) == 2
    rejected = of_kind(outcomes, Rejected)
    assert len(rejected) == 1
    assert rejected[0].error.line == 3


def test_short_row_rejected_with_line(tmp_path):
    data = (ROWS + "03/09/2015,WENDY'S #6338\n").encode()

    outcomes = read_card_export(tmp_path, data)

    assert len(of_kind(outcomes, Row)) == 2
    rejected = of_kind(outcomes, Rejected)
    assert len(rejected) == 1
    assert rejected[0].error.line == 3
    assert "2 fields" in rejected[0].error.reason


def test_user_option_with_named_columns(tmp_path):
    layout = load_layout(layout_file(tmp_path, CARD_LAYOUT))

    outcomes = read(ROWS.encode(), layout, user="ana")

    assert [row.transaction.user_id for row in of_kind(outcomes, Row)] == ["ana", "ana"]


def test_repeated_column_name(tmp_path):
    message = layout_error(tmp_path, CARD_LAYOUT.replace("Unused, Balance", "Amount, Balance"))

    assert "header names ['Amount'] more than once" in message
    assert "give every column its own name" in message


def test_unnamed_column(tmp_path):
    message = layout_error(tmp_path, CARD_LAYOUT.replace("Unused", '""'))

    assert "column 4 has no name" in message
    assert "unused4" in message


def test_mapped_column_not_in_header(tmp_path):
    message = layout_error(tmp_path, CARD_LAYOUT.replace("amount_usd: Amount", "amount_usd: Total"))

    assert "reads columns ['Total'] that header does not name" in message


def test_headerless_error_points_at_header_key():
    with pytest.raises(InputError) as raised:
        list(read_transactions(io.BytesIO(ROWS.encode())))

    assert "looks like data, not a header" in str(raised.value)
    assert "header: in that layout file" in str(raised.value)


@needs_samples
def test_reckon_card_sample(tmp_path):
    outcomes = list(read_transactions(SHARED_DATA / "reckon/51-sample.csv",
                                      layout=load_layout(layout_file(tmp_path, CARD_LAYOUT))))

    rows = of_kind(outcomes, Row)
    assert len(rows) == 8
    assert len(outcomes) == 8
    assert rows[0].transaction.merchant == "05354 SUBWAY"
    assert rows[-1].transaction.amount_usd == Decimal("10.12")


@needs_samples
def test_suntrust_checking_sample(tmp_path):
    outcomes = list(read_transactions(SHARED_DATA / "reckon/suntrust.csv",
                                      layout=load_layout(layout_file(tmp_path, CHECKING_LAYOUT))))

    rows = of_kind(outcomes, Row)
    skipped = of_kind(outcomes, Skipped)
    assert len(rows) == 5
    assert {row.transaction.amount_usd for row in rows} == {Decimal("100.00")}
    assert [item.line for item in skipped] == [1, 7]


@needs_samples
@one_server
def test_cli_publishes_headerless_sample(cli_env, keys, tmp_path):
    layout = layout_file(tmp_path, CARD_LAYOUT)

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(SHARED_DATA / "reckon/51-sample.csv"),
                            "--layout", str(layout), "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["published"] == 8
    assert summary["rejected"] == 0


def test_short_layout_header_blames_the_layout(tmp_path):
    layout = load_layout(layout_file(tmp_path, CARD_LAYOUT.replace(", Balance]", "]")))

    outcomes = read(ROWS.encode(), layout)

    rejected = of_kind(outcomes, Rejected)
    assert len(rejected) == 2
    assert rejected[0].error.reason == "the row has 5 fields but the layout's header names 4 columns"
    assert rejected[0].error.fix.startswith("name every column of the file in the layout's header")
