"""Plaid CSV reads the merchant and time fields that Plaid JSON reads, through a layout's preferred columns."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

import pytest

from conftest import SHARED_DATA
from producer import InputError, Rejected, Row, Skipped, load_layout, read_transactions
from producer.bank_layouts import PLAID_CSV, PLAID_MERCHANT_FIELDS, PLAID_TIME_FIELDS
from producer.layouts import Layout, detect_layout
from producer.readers import CsvReader, scan_date_order

needs_samples = pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared sample data is not available")

# The columns of BeanHub's Plaid CSV that these tests fill, in its order.
PLAID_COLUMNS = [
    "date", "name", "amount", "pending", "datetime", "account_id", "merchant_name", "transaction_id",
    "authorized_date", "iso_currency_code", "authorized_datetime",
]
# The columns the plaid-csv preset requires, without merchant_name and the other time columns.
MINIMAL_COLUMNS = ["date", "name", "amount", "pending", "account_id", "transaction_id", "iso_currency_code"]


def read(data: bytes, **options) -> list:
    return list(read_transactions(io.BytesIO(data), **options))


def plaid_csv(entries: list[dict], columns: list[str] = PLAID_COLUMNS) -> bytes:
    """Write entries as BeanHub does: a column per key, null as an empty field, booleans as True/False."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for entry in entries:
        writer.writerow({key: "" if entry.get(key) is None else str(entry[key]) for key in columns})
    return text.getvalue().encode()


def plaid_json(entries: list[dict]) -> bytes:
    return json.dumps({"accounts": [], "transactions": entries}, indent=2).encode()


def entry(number: int = 1, **fields) -> dict:
    values = {
        "transaction_id": f"tx-{number}", "account_id": "acc-1", "amount": 12.5, "pending": False,
        "iso_currency_code": "USD", "name": "SQ *BLUE BOTTLE 0421", "date": "2024-07-03",
    }
    values.update(fields)
    return values


def only_row(outcomes: list) -> Row:
    [row] = outcomes
    assert isinstance(row, Row), row
    return row


def test_plaid_field_orders():
    assert PLAID_MERCHANT_FIELDS == ("merchant_name", "name")
    assert PLAID_TIME_FIELDS == ("authorized_datetime", "datetime", "authorized_date", "date")
    assert PLAID_CSV.columns["merchant"] == "name"
    assert PLAID_CSV.columns["timestamp"] == "date"
    assert PLAID_CSV.preferred == {
        "merchant": ("merchant_name",),
        "timestamp": ("authorized_datetime", "datetime", "authorized_date"),
        "category": ("personal_finance_category__detailed",),
    }


# Each case: the Plaid fields an entry has (null for the rest), and the merchant and time both readers take.
@pytest.mark.parametrize(
    ("fields", "merchant", "moment"),
    [
        ({}, "SQ *BLUE BOTTLE 0421", datetime(2024, 7, 3, 12, tzinfo=timezone.utc)),
        ({"merchant_name": "Blue Bottle Coffee"}, "Blue Bottle Coffee", datetime(2024, 7, 3, 12, tzinfo=timezone.utc)),
        ({"authorized_date": "2024-07-01"}, "SQ *BLUE BOTTLE 0421", datetime(2024, 7, 1, 12, tzinfo=timezone.utc)),
        ({"datetime": "2024-07-03T09:15:00Z", "authorized_date": "2024-07-01"}, "SQ *BLUE BOTTLE 0421",
         datetime(2024, 7, 3, 9, 15, tzinfo=timezone.utc)),
        ({"authorized_datetime": "2024-07-01T18:40:00Z", "datetime": "2024-07-03T09:15:00Z",
          "authorized_date": "2024-07-01"}, "SQ *BLUE BOTTLE 0421", datetime(2024, 7, 1, 18, 40, tzinfo=timezone.utc)),
        ({"authorized_datetime": "2024-07-01T14:40:00-04:00", "merchant_name": "Blue Bottle Coffee"},
         "Blue Bottle Coffee", datetime(2024, 7, 1, 18, 40, tzinfo=timezone.utc)),
    ],
)
def test_csv_and_json_agree(fields, merchant, moment):
    plaid = entry(**fields)

    from_json = only_row(read(plaid_json([plaid]))).transaction
    from_csv = only_row(read(plaid_csv([plaid]))).transaction

    assert from_json.merchant == merchant
    assert from_json.timestamp == moment
    assert from_csv.merchant == merchant
    assert from_csv.timestamp == moment
    assert from_csv.transaction_id == from_json.transaction_id == "tx-1"


def test_empty_preferred_falls_back():
    # BeanHub writes a null merchant_name or authorized_date as an empty field.
    outcomes = read(plaid_csv([entry(merchant_name="", authorized_date="", authorized_datetime="")]))

    transaction = only_row(outcomes).transaction
    assert transaction.merchant == "SQ *BLUE BOTTLE 0421"
    assert transaction.timestamp == datetime(2024, 7, 3, 12, tzinfo=timezone.utc)


def test_minimal_plaid_csv_unchanged():
    data = plaid_csv([entry(1), entry(2, amount=-3, name="REFUND")], columns=MINIMAL_COLUMNS)
    reader = CsvReader(io.BytesIO(data), name="plaid.csv")

    outcomes = list(reader)

    assert reader.layout.name == "plaid-csv"
    row = outcomes[0]
    assert isinstance(row, Row)
    assert row.transaction.transaction_id == "tx-1"
    assert row.transaction.merchant == "SQ *BLUE BOTTLE 0421"
    assert row.transaction.timestamp == datetime(2024, 7, 3, 12, tzinfo=timezone.utc)
    assert row.transaction.card_used == "plaid account acc-1"
    assert isinstance(outcomes[1], Skipped)
    assert outcomes[1].transaction_id == "tx-2"
    assert not any("are not used" in warning or "is not used" in warning for warning in reader.warnings)


def test_preferred_columns_not_required():
    header = ["date", "name", "amount", "pending", "account_id", "transaction_id"]

    assert detect_layout(header).name == "plaid-csv"
    assert detect_layout(header + ["merchant_name", "authorized_date"]).name == "plaid-csv"


def test_preferred_columns_not_warned_unused():
    reader = CsvReader(io.BytesIO(plaid_csv([entry(website="blue.example")], columns=PLAID_COLUMNS + ["website"])))

    list(reader)

    [warning] = [warning for warning in reader.warnings if "not used" in warning]
    assert "'website'" in warning
    for column in ("merchant_name", "authorized_date", "authorized_datetime", "datetime"):
        assert repr(column) not in warning


def test_bad_authorized_date_names_column():
    plaid = entry(authorized_date="2024-02-30")

    [from_csv] = read(plaid_csv([plaid]))
    [from_json] = read(plaid_json([plaid]))

    assert isinstance(from_csv, Rejected)
    assert from_csv.error.column == "authorized_date"
    assert from_csv.error.value == "2024-02-30"
    assert "February 2024 has 29 days" in from_csv.error.reason
    assert from_csv.error.transaction_id == "tx-1"
    assert isinstance(from_json, Rejected)
    assert from_json.error.column == "transactions[0].authorized_date"


def test_error_column_follows_each_row():
    # Row 1 takes the time from authorized_date, row 2 from date, and each error names its own column.
    data = plaid_csv([entry(1, authorized_date="2024-07-01"), entry(2, date="2024-13-01")])

    first, second = read(data)

    assert isinstance(first, Row)
    assert first.transaction.timestamp == datetime(2024, 7, 1, 12, tzinfo=timezone.utc)
    assert isinstance(second, Rejected)
    assert second.error.column == "date"
    assert "month 13 is out of range" in second.error.reason


@needs_samples
def test_beanhub_sample_uses_plaid_fields():
    outcomes = list(read_transactions(SHARED_DATA / "beanhub-extract/plaid.csv"))

    rows = {outcome.transaction.transaction_id: outcome.transaction for outcome in outcomes if isinstance(outcome, Row)}
    uber = rows["R55WBQZRx5h8J8dEKmPbFeda45RL6RCapLk7B"]
    assert uber.merchant == "Uber"  # name is "Uber 072515 SF**POOL**"
    assert uber.timestamp == datetime(2024, 1, 7, 12, tzinfo=timezone.utc)  # authorized_date, not date 2024-01-08
    sparkfun = rows["vPPEBM3p8PiAjAKZ1oRzCVEAwb7BK7iq6Pear"]
    assert sparkfun.merchant == "FUN"  # Plaid's merchant_name, as the Plaid JSON reader takes it
    assert sparkfun.timestamp == datetime(2024, 1, 20, 12, tzinfo=timezone.utc)
    bicycle = rows["ZrD8XbQvm7clZJe6EzMpcK5L3KebEMIe1xK5g"]
    assert bicycle.merchant == "Madison Bicycle Shop"  # merchant_name and authorized_date are empty
    assert bicycle.timestamp == datetime(2024, 1, 27, 12, tzinfo=timezone.utc)


CARD_LAYOUT = """\
name: cardbank
columns:
  transaction_id: "cardbank-{#line}-{#row_hash}"
  merchant: Description
  amount_usd: Amount
  timestamp: Post Date
constants: {user_id: me}
timestamp_formats: ["%m/%d/%Y"]
"""
CARD_CSV = (
    "Transaction Date,Post Date,Description,Payee,Amount\n"
    "03/02/2026,03/04/2026,SQ *CORNER CAFE 0042,Corner Cafe,4.50\n"
    ",03/05/2026,SHELL OIL 5744,,30.00\n"
)


def write_layout(tmp_path, extra: str = "") -> Layout:
    path = tmp_path / "cardbank.yaml"
    path.write_text(CARD_LAYOUT + extra)
    return load_layout(path)


def test_layout_file_preferred(tmp_path):
    layout = write_layout(tmp_path, "preferred:\n  merchant: Payee\n  timestamp: [Transaction Date]\n")

    first, second = read(CARD_CSV.encode(), layout=layout)

    assert layout.preferred == {"merchant": ("Payee",), "timestamp": ("Transaction Date",)}
    assert first.transaction.merchant == "Corner Cafe"
    assert first.transaction.timestamp == datetime(2026, 3, 2, 12, tzinfo=timezone.utc)
    assert second.transaction.merchant == "SHELL OIL 5744"
    assert second.transaction.timestamp == datetime(2026, 3, 5, 12, tzinfo=timezone.utc)


def test_preferred_keeps_generated_ids(tmp_path):
    plain = write_layout(tmp_path)
    with_preferred = plain.model_copy(update={"preferred": {"merchant": ("Payee",)}})

    plain_ids = [outcome.transaction.transaction_id for outcome in read(CARD_CSV.encode(), layout=plain)]
    preferred_ids = [outcome.transaction.transaction_id for outcome in read(CARD_CSV.encode(), layout=with_preferred)]

    assert preferred_ids == plain_ids
    assert plain_ids[0].startswith("cardbank-2-")


def test_date_order_reads_preferred_column(tmp_path):
    # Post Date proves month first, but the timestamp comes from Transaction Date, which is day first.
    layout = write_layout(tmp_path, "preferred: {timestamp: [Transaction Date]}\n")
    data = (
        "Transaction Date,Post Date,Description,Payee,Amount\n"
        "03/02/2026,03/04/2026,CAFE,,4.50\n"
        "25/03/2026,03/26/2026,SHELL,,30.00\n"
    ).encode()

    with pytest.raises(InputError, match="line 3 has '25/03/2026'"):
        scan_date_order(io.BytesIO(data), name="card.csv", layout=layout)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("preferred: {merchant: []}\n", "preferred.merchant lists no columns"),
        ("preferred: {merchant: ['{Payee} x']}\n", "preferred.merchant: '{Payee} x' is not a column name"),
        ("preferred: {merchant: ['  ']}\n", "preferred.merchant: '  ' is not a column name"),
        ("preferred: {payee: [Payee]}\n", "unknown transaction fields ['payee']"),
        ("preferred: {merchant: {Payee: 1}}\n", "preferred.merchant"),
    ],
)
def test_invalid_preferred_rejected(tmp_path, extra, message):
    with pytest.raises(InputError) as caught:
        write_layout(tmp_path, extra)

    assert "cardbank.yaml" in str(caught.value)
    assert message in str(caught.value)


def test_preferred_amount_needs_amount_column(tmp_path):
    path = tmp_path / "pair.yaml"
    path.write_text(
        "columns: {transaction_id: 'p-{#line}', merchant: Description, timestamp: Date}\n"
        "constants: {user_id: me}\n"
        "debit_column: Debit\ncredit_column: Credit\n"
        "preferred: {amount_usd: [Amount]}\n"
    )

    with pytest.raises(InputError, match="preferred.amount_usd needs columns.amount_usd"):
        load_layout(path)
