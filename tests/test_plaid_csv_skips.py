"""The plaid-csv preset skips, rejects and categorizes entries as the Plaid JSON reader does.

Also covers the Layout options that make it do so, ``optional_skip_values``
and ``optional_reject_when_present``, in presets and in layout files.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from conftest import one_server
from producer import InputError, Producer, Rejected, Row, Skipped, load_layout, publish_file, read_transactions
from rewardpilot.fx import CurrencyConverter
from producer.bank_layouts import PLAID_CSV, PLAID_NOT_PURCHASES, PLAID_UNOFFICIAL_CURRENCY
from producer.layouts import detect_layout
from producer.readers import CsvReader

PRIMARY = "personal_finance_category__primary"
DETAILED = "personal_finance_category__detailed"

# BeanHub's Plaid CSV columns that these tests fill, in the order of its sample export.
COLUMNS = [
    "date", "name", "amount", "pending", "account_id", "merchant_name", "transaction_id",
    "iso_currency_code", "unofficial_currency_code", PRIMARY, DETAILED,
]
# The columns the plaid-csv preset requires, plus iso_currency_code, so no category or unofficial currency.
MINIMAL_COLUMNS = ["date", "name", "amount", "pending", "account_id", "transaction_id", "iso_currency_code"]
# The readers are under test, so amounts in other currencies are kept as read.
KEEP_CURRENCY = CurrencyConverter(unconverted="keep")


def entry(number: int = 1, **fields) -> dict:
    """Return a Plaid transaction as the JSON reader sees it. Keys named like the CSV columns set the nested category."""
    values = {
        "transaction_id": f"tx-{number}", "account_id": "acc-1", "amount": 12.5, "pending": False,
        "iso_currency_code": "USD", "unofficial_currency_code": None, "name": "SQ *BLUE BOTTLE 0421",
        "merchant_name": None, "date": "2024-07-03",
        "personal_finance_category": {"primary": "FOOD_AND_DRINK", "detailed": "FOOD_AND_DRINK_COFFEE"},
    }
    category = dict(values["personal_finance_category"])
    for column, key in ((PRIMARY, "primary"), (DETAILED, "detailed")):
        if column in fields:
            category[key] = fields.pop(column)
    values["personal_finance_category"] = category
    values.update(fields)
    return values


def plaid_csv(entries: list[dict], columns: list[str] = COLUMNS) -> bytes:
    """Write entries as BeanHub does: nested keys joined with "__", null as an empty field, True/False."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for plaid in entries:
        flat = {key: value for key, value in plaid.items() if key != "personal_finance_category"}
        for key, value in plaid["personal_finance_category"].items():
            flat[f"personal_finance_category__{key}"] = value
        writer.writerow({column: "" if flat.get(column) is None else str(flat[column]) for column in columns})
    return text.getvalue().encode()


def plaid_json(entries: list[dict]) -> bytes:
    return json.dumps({"accounts": [], "transactions": entries}).encode()


def read(data: bytes, **options) -> list:
    return list(read_transactions(io.BytesIO(data), converter=KEEP_CURRENCY, **options))


def kinds(outcomes: list) -> list[str]:
    return [type(outcome).__name__ for outcome in outcomes]


# Skipped categories

def test_one_list_for_both_readers():
    assert PLAID_CSV.optional_skip_values == {PRIMARY: PLAID_NOT_PURCHASES}
    assert set(PLAID_NOT_PURCHASES) == {"LOAN_PAYMENTS", "TRANSFER_IN", "TRANSFER_OUT", "INCOME", "BANK_FEES"}


@pytest.mark.parametrize("primary", sorted(PLAID_NOT_PURCHASES))
def test_not_purchase_skipped_by_both(primary):
    plaid = entry(**{PRIMARY: primary, DETAILED: f"{primary}_OTHER"})

    [from_csv] = read(plaid_csv([plaid]))
    [from_json] = read(plaid_json([plaid]))

    assert isinstance(from_csv, Skipped), from_csv
    assert isinstance(from_json, Skipped), from_json
    assert from_csv.transaction_id == from_json.transaction_id == "tx-1"
    assert from_csv.line == 2
    assert from_csv.reason == f"{PLAID_NOT_PURCHASES[primary]} ({PRIMARY}: {primary}), not a purchase"
    assert from_json.reason == f"{PLAID_NOT_PURCHASES[primary]} ({primary}), not a purchase"


def test_skip_compares_without_case():
    [outcome] = read(plaid_csv([entry(**{PRIMARY: "income"})]))

    assert isinstance(outcome, Skipped)
    assert "income (personal_finance_category__primary: income)" in outcome.reason


def test_purchases_around_skip_published():
    data = plaid_csv([
        entry(1),
        entry(2, amount=500, **{PRIMARY: "TRANSFER_OUT", DETAILED: "TRANSFER_OUT_ACCOUNT_TRANSFER"}),
        entry(3, **{PRIMARY: "GENERAL_MERCHANDISE", DETAILED: "GENERAL_MERCHANDISE_OTHER_GENERAL_MERCHANDISE"}),
    ])

    outcomes = read(data)

    assert kinds(outcomes) == ["Row", "Skipped", "Row"]
    assert [outcome.line for outcome in outcomes] == [2, 3, 4]
    assert outcomes[1].transaction_id == "tx-2"


def test_pending_reason_comes_first():
    # Both readers check pending before the category, so the reason names pending.
    [outcome] = read(plaid_csv([entry(pending=True, **{PRIMARY: "INCOME"})]))

    assert isinstance(outcome, Skipped)
    assert outcome.reason.startswith("pending")


def test_no_category_column_reads_all():
    data = plaid_csv([entry(1), entry(2, **{PRIMARY: "INCOME"})], columns=MINIMAL_COLUMNS)

    outcomes = read(data)

    assert kinds(outcomes) == ["Row", "Row"]
    assert outcomes[0].transaction.category == ""


# Unofficial currencies

def test_unofficial_currency_rejected_by_both():
    plaid = entry(iso_currency_code=None, unofficial_currency_code="DOGE")

    [from_csv] = read(plaid_csv([plaid]))
    [from_json] = read(plaid_json([plaid]))

    assert isinstance(from_csv, Rejected), from_csv
    assert isinstance(from_json, Rejected), from_json
    error = from_csv.error
    assert error.reason == f"{PLAID_UNOFFICIAL_CURRENCY} (unofficial_currency_code: DOGE)"
    assert error.column == "unofficial_currency_code"
    assert error.value == "DOGE"
    assert error.line == 2
    assert error.fix == "leave this row out of the file"
    assert error.transaction_id == "tx-1"
    assert from_json.error.reason == PLAID_UNOFFICIAL_CURRENCY
    assert from_json.error.value == "DOGE"


def test_unofficial_currency_message_names_all():
    [outcome] = read(plaid_csv([entry(iso_currency_code=None, unofficial_currency_code="DOGE")]))

    message = outcome.error.message

    assert "line 2" in message
    assert "'unofficial_currency_code'" in message
    assert "DOGE" in message
    assert message.endswith("; leave this row out of the file")


def test_rows_around_reject_published():
    data = plaid_csv([
        entry(1),
        entry(2, iso_currency_code=None, unofficial_currency_code="BTC"),
        entry(3, iso_currency_code="EUR"),
    ])

    outcomes = read(data)

    assert kinds(outcomes) == ["Row", "Rejected", "Row"]
    assert outcomes[0].transaction.currency == "USD"
    assert outcomes[2].transaction.currency == "EUR"


@pytest.mark.parametrize(
    "fields",
    [
        {"amount": -4},
        {"amount": 0},
        {"pending": True},
        {PRIMARY: "TRANSFER_IN"},
    ],
)
def test_unofficial_non_purchase_skipped(fields):
    # A refund, a pending entry or a transfer is skipped before the currency is checked, in both readers.
    plaid = entry(iso_currency_code=None, unofficial_currency_code="BTC", **fields)

    [from_csv] = read(plaid_csv([plaid]))
    [from_json] = read(plaid_json([plaid]))

    assert isinstance(from_csv, Skipped), from_csv
    assert isinstance(from_json, Skipped), from_json


def test_no_unofficial_column_reads_all():
    [outcome] = read(plaid_csv([entry()], columns=MINIMAL_COLUMNS))

    assert isinstance(outcome, Row)


# Category text

# Each case: the category values of an entry (None for null), and the category text both readers take.
@pytest.mark.parametrize(
    ("fields", "category"),
    [
        ({}, "FOOD_AND_DRINK_COFFEE"),
        ({DETAILED: None}, "FOOD_AND_DRINK"),
        ({DETAILED: ""}, "FOOD_AND_DRINK"),
        ({DETAILED: None, PRIMARY: None}, ""),
        ({PRIMARY: None}, "FOOD_AND_DRINK_COFFEE"),
    ],
)
def test_category_matches_json(fields, category):
    plaid = entry(**fields)

    [from_csv] = read(plaid_csv([plaid]))
    [from_json] = read(plaid_json([plaid]))

    assert from_csv.transaction.category == category
    assert from_json.transaction.category == category


def test_category_without_detailed_column():
    columns = [column for column in COLUMNS if column != DETAILED]

    [outcome] = read(plaid_csv([entry()], columns=columns))

    assert outcome.transaction.category == "FOOD_AND_DRINK"


def test_category_without_primary_column():
    columns = [column for column in COLUMNS if column != PRIMARY]

    [outcome] = read(plaid_csv([entry()], columns=columns))

    assert outcome.transaction.category == "FOOD_AND_DRINK_COFFEE"


# Headers

def test_new_columns_not_required():
    assert detect_layout(MINIMAL_COLUMNS).name == "plaid-csv"
    assert detect_layout(COLUMNS).name == "plaid-csv"
    assert "unofficial_currency_code" not in PLAID_CSV.required_columns
    assert PRIMARY not in PLAID_CSV.required_columns


def test_new_columns_not_warned_unused():
    reader = CsvReader(io.BytesIO(plaid_csv([entry()], columns=COLUMNS + ["website"])), name="plaid.csv")

    list(reader)

    [warning] = [warning for warning in reader.warnings if "not used" in warning]
    assert "'website'" in warning
    for column in (PRIMARY, DETAILED, "unofficial_currency_code"):
        assert repr(column) not in warning


# The rejects file and the summary

def publish(client, keys, source: Path, rejects: Path):
    return publish_file(client, keys, source, progress=False, rejects_path=rejects,
                        producer=Producer(client, keys, max_backlog=None, dedup_window_seconds=0),
                        console=Console(file=io.StringIO(), width=200, emoji=False))


@one_server
def test_publish_records_skips_and_rejects(sync_client, keys, tmp_path):
    source = tmp_path / "plaid.csv"
    source.write_bytes(plaid_csv([
        entry(1),
        entry(2, amount=900, **{PRIMARY: "LOAN_PAYMENTS", DETAILED: "LOAN_PAYMENTS_CREDIT_CARD_PAYMENT"}),
        entry(3, amount=2500, **{PRIMARY: "INCOME", DETAILED: "INCOME_WAGES"}),
        entry(4, iso_currency_code=None, unofficial_currency_code="BTC"),
    ]))
    rejects = tmp_path / "rejects.jsonl"

    summary = publish(sync_client, keys, source, rejects)

    assert summary.published == 1
    assert summary.skipped == 2
    assert summary.rejected == 1
    assert sync_client.xlen(keys.transactions) == 1
    records = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(record["outcome"], record["transaction_id"], record["line"]) for record in records] == [
        ("skipped", "tx-2", 3), ("skipped", "tx-3", 4), ("rejected", "tx-4", 5),
    ]
    assert records[0]["reason"] == "loan or card payment (personal_finance_category__primary: LOAN_PAYMENTS), not a purchase"
    assert records[2]["column"] == "unofficial_currency_code"
    assert records[2]["value"] == "BTC"
    assert records[2]["fix"] == "leave this row out of the file"


# The options in layout files

LAYOUT = """\
name: wallet-export
columns:
  transaction_id: "wallet-{#line}-{#row_hash}"
  merchant: Payee
  amount_usd: Amount
  timestamp: Date
constants: {user_id: me}
optional_skip_values:
  Kind: {Payment: payment to the card, "": no kind given}
optional_reject_when_present:
  Token: the amount is in loyalty tokens, not money
"""


def write_layout(tmp_path: Path, text: str = LAYOUT) -> Path:
    path = tmp_path / "wallet.yaml"
    path.write_text(text)
    return path


def test_layout_file_options(tmp_path):
    layout = load_layout(write_layout(tmp_path))
    data = (
        "Date,Payee,Amount,Kind,Token\n"
        "2026-03-02,Corner Cafe,4.50,Purchase,\n"
        "2026-03-03,Card Services,40.00,payment,\n"
        "2026-03-04,Arcade,3.00,Purchase,GEMS\n"
        "2026-03-05,Shell,30.00,,\n"
    ).encode()

    outcomes = read(data, layout=layout)

    assert kinds(outcomes) == ["Row", "Skipped", "Rejected", "Skipped"]
    assert outcomes[1].reason == "payment to the card (Kind: payment), not a purchase"
    assert outcomes[2].error.reason == "the amount is in loyalty tokens, not money (Token: GEMS)"
    assert outcomes[2].error.column == "Token"
    assert outcomes[2].error.line == 4
    assert outcomes[3].reason == "no kind given (Kind empty), not a purchase"


def test_layout_file_columns_optional(tmp_path):
    layout = load_layout(write_layout(tmp_path))
    data = "Date,Payee,Amount\n2026-03-02,Corner Cafe,4.50\n2026-03-03,Card Services,40.00\n".encode()

    outcomes = read(data, layout=layout)

    assert kinds(outcomes) == ["Row", "Row"]


def test_headerless_layout_options(tmp_path):
    layout = load_layout(write_layout(tmp_path, LAYOUT + "header: [Date, Payee, Amount, Kind, Token]\n"))
    data = "2026-03-02,Corner Cafe,4.50,Purchase,\n2026-03-04,Arcade,3.00,Purchase,GEMS\n".encode()

    outcomes = read(data, layout=layout)

    assert kinds(outcomes) == ["Row", "Rejected"]
    assert outcomes[1].error.line == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optional_skip_values: {'  ': {Payment: payment}}\n", "optional_skip_values: '  ' is not a column name"),
        ("optional_skip_values: {'{Kind}': {Payment: payment}}\n",
         "optional_skip_values: '{Kind}' is not a column name"),
        ("optional_skip_values: {Kind: Payment}\n", "optional_skip_values.Kind"),
        ("optional_reject_when_present: {'': tokens}\n", "optional_reject_when_present: '' is not a column name"),
        ("optional_reject_when_present: {Token: '  '}\n", "optional_reject_when_present.Token gives no reason"),
        ("optional_reject_when_present: {Token: [tokens]}\n", "optional_reject_when_present.Token"),
    ],
)
def test_invalid_options_rejected(tmp_path, text, message):
    base = LAYOUT.split("optional_skip_values:")[0]

    with pytest.raises(InputError) as caught:
        load_layout(write_layout(tmp_path, base + text))

    assert "wallet.yaml" in str(caught.value)
    assert message in str(caught.value)
