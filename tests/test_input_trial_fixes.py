"""Input handling of bank exports, OFX statements and Plaid responses.

Bank preset ids do not depend on the row's line, so a re-downloaded export
is caught as duplicates. A header column the layout reads may not appear
twice. Currency and OFX date errors name the value and give a fix that works.
A repeated Plaid transaction_id names the earlier entry by its JSON path.
"""

from __future__ import annotations

import io
import json
import re

import pytest

from conftest import SHARED_DATA
from producer import InputError, Rejected, Row, Skipped, load_layout, publish_file, read_transactions
from producer.errors import InvalidValueError
from producer.layouts import row_digest
from producer.ofx import parse_ofx_time
from producer.publisher import Producer
from producer.readers import open_reader

CHASE_SAMPLE = SHARED_DATA / "beanhub-extract" / "chase_credit_card.csv"
needs_samples = pytest.mark.skipif(not CHASE_SAMPLE.exists(), reason="shared sample data is not available")

CHASE_HEADER = "Transaction Date,Post Date,Description,Category,Type,Amount,Memo\n"
NEW_CHASE_ROW = "04/12/2024,04/13/2024,BLUE BOTTLE COFFEE,Food & Drink,Sale,-5.75,\n"
DOCUMENTED_HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp"


def read(data: bytes, **options) -> list:
    return list(read_transactions(io.BytesIO(data), **options))


def ids_of(outcomes: list) -> list[str | None]:
    """Return the transaction_id of every published or skipped outcome, in file order."""
    ids = []
    for outcome in outcomes:
        if isinstance(outcome, Row):
            ids.append(outcome.transaction.transaction_id)
        elif isinstance(outcome, Skipped):
            ids.append(outcome.transaction_id)
    return ids


def errors_of(outcomes: list) -> list:
    return [outcome.error for outcome in outcomes if isinstance(outcome, Rejected)]


def write_layout(tmp_path, text: str):
    path = tmp_path / "layout.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# Preset ids: the row hash and a repeat count, never the line.

@needs_samples
def test_chase_redownload_publishes_new_row_only(sync_client, keys, tmp_path):
    """A later download with one new purchase at the top publishes that purchase and nothing else."""
    lines = CHASE_SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    later = tmp_path / "chase_later.csv"
    later.write_text(lines[0] + NEW_CHASE_ROW + "".join(lines[1:]), encoding="utf-8")
    producer = Producer(sync_client, keys, max_backlog=None)

    first = publish_file(sync_client, keys, CHASE_SAMPLE, rejects_path=tmp_path / "first.jsonl",
                         progress=False, producer=producer)
    second = publish_file(sync_client, keys, later, rejects_path=tmp_path / "second.jsonl",
                          progress=False, producer=producer)

    assert (first.published, first.duplicates, first.skipped) == (4, 0, 1)
    assert second.published == 1
    assert second.duplicates == 4
    assert second.skipped == 1
    assert sync_client.xlen(keys.transactions) == 5


@needs_samples
def test_chase_ids_same_after_row_inserted():
    original = CHASE_SAMPLE.read_bytes()
    header, rest = original.split(b"\n", 1)
    later = header + b"\n" + NEW_CHASE_ROW.encode() + rest

    before = ids_of(read(original))
    after = ids_of(read(later))

    assert len(after) == len(before) + 1
    assert after[1:] == before


def test_chase_id_is_hash_and_count():
    row = "04/03/2024,04/05/2024,APPLE.COM/BILL,Shopping,Sale,-1.23,"

    [outcome] = read((CHASE_HEADER + row + "\n").encode(), user="alice")

    assert outcome.transaction.transaction_id == f"chase-{row_digest('alice', row)}-0"


def test_identical_rows_counted_apart():
    row = "04/03/2024,04/05/2024,APPLE.COM/BILL,Shopping,Sale,-1.23,\n"
    other = "04/02/2024,04/03/2024,COSTCO WHSE #01234,Shopping,Sale,-4.56,\n"

    ids = ids_of(read((CHASE_HEADER + row + other + row + row).encode()))

    digest = row_digest("me", row.rstrip("\n"))
    assert ids[0] == f"chase-{digest}-0"
    assert ids[2] == f"chase-{digest}-1"
    assert ids[3] == f"chase-{digest}-2"
    assert ids[1].endswith("-0")
    assert len(set(ids)) == 4


def test_identical_rows_same_ids_each_read():
    """Each file counts from 0, so the same two rows in a later file get the same two ids."""
    row = "04/03/2024,04/05/2024,APPLE.COM/BILL,Shopping,Sale,-1.23,\n"
    data = (CHASE_HEADER + row + row).encode()

    assert ids_of(read(data)) == ids_of(read(data))
    assert set(ids_of(read(data, user="alice"))).isdisjoint(ids_of(read(data, user="bob")))


FIRSTBANK = (
    "name: firstbank\n"
    "columns:\n"
    "  transaction_id: 'firstbank-{#row_hash}-{#repeat}'\n"
    "  merchant: 'Payee #{#repeat} line {#line}'\n"
    "  amount_usd: Value\n"
    "  timestamp: Booked\n"
    "constants: {user_id: me}\n"
)


def test_layout_repeat_counted_once_per_row(tmp_path):
    layout = load_layout(write_layout(tmp_path, FIRSTBANK))
    data = b"Booked,Payee,Value\n2024-05-01,Cafe,4.50\n2024-05-01,Cafe,4.50\n"

    rows = [outcome.transaction for outcome in read(data, layout=layout)]

    assert [row.transaction_id[-2:] for row in rows] == ["-0", "-1"]
    assert [row.merchant for row in rows] == ["Payee #0 line 2", "Payee #1 line 3"]


def test_layout_line_placeholder_still_works(tmp_path):
    text = FIRSTBANK.replace("firstbank-{#row_hash}-{#repeat}", "firstbank-{#line}-{#row_hash}")
    layout = load_layout(write_layout(tmp_path, text))
    row = "2024-05-01,Cafe,4.50"

    [outcome] = read(f"Booked,Payee,Value\n{row}\n".encode(), layout=layout)

    assert outcome.transaction.transaction_id == f"firstbank-2-{row_digest('me', row)}"


def test_layout_unknown_placeholder_rejected(tmp_path):
    text = FIRSTBANK.replace("{#repeat}'\n  merchant", "{#repeats}'\n  merchant")

    with pytest.raises(InputError) as raised:
        load_layout(write_layout(tmp_path, text))

    message = str(raised.value)
    assert "columns.transaction_id: {#repeats} is not a placeholder" in message
    assert "{#line}, {#row_hash}, {#repeat}" in message


def test_layout_user_from_repeat_rejected(tmp_path):
    text = FIRSTBANK.replace("constants: {user_id: me}\n", "  user_id: 'user-{#repeat}'\n")

    with pytest.raises(InputError) as raised:
        load_layout(write_layout(tmp_path, text))

    assert "columns.user_id cannot use {#repeat}" in str(raised.value)


def ofx_statement(entries: list[str], currency: str = "USD") -> bytes:
    """Build an OFX 1.x credit-card statement whose STMTTRN bodies are ``entries``."""
    transactions = "".join(f"<STMTTRN>{entry}</STMTTRN>\n" for entry in entries)
    return (
        "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nENCODING:USASCII\nCHARSET:1252\n\n"
        f"<OFX><CREDITCARDMSGSRSV1><CCSTMTTRNRS><CCSTMTRS><CURDEF>{currency}"
        "<CCACCTFROM><ACCTID>4111000011119876</CCACCTFROM>"
        f"<BANKTRANLIST>\n{transactions}</BANKTRANLIST></CCSTMTRS></CCSTMTTRNRS></CREDITCARDMSGSRSV1></OFX>\n"
    ).encode()


def ofx_purchase(date: str = "20240501", name: str = "CAFE", fitid: str | None = None) -> str:
    fitid_tag = f"<FITID>{fitid}" if fitid is not None else ""
    return f"<TRNTYPE>DEBIT<DTPOSTED>{date}<TRNAMT>-12.34{fitid_tag}<NAME>{name}"


def test_ofx_without_fitid_ignores_line():
    old = [ofx_purchase(name="CAFE"), ofx_purchase(name="BAKERY")]

    before = ids_of(read(ofx_statement(old)))
    after = ids_of(read(ofx_statement([ofx_purchase(name="NEW"), *old])))

    assert after[1:] == before
    assert all(re.fullmatch(r"ofx-9876-[0-9a-f]{16}-0", transaction_id) for transaction_id in after)


def test_ofx_identical_entries_counted_apart():
    ids = ids_of(read(ofx_statement([ofx_purchase(), ofx_purchase()])))

    assert ids[0].endswith("-0")
    assert ids[1] == ids[0][:-1] + "1"


# A header column the layout reads, named twice.

def test_repeated_amount_column_rejected():
    data = f"{DOCUMENTED_HEADER},amount_usd\nt1,u1,Shop,groceries,12.50,5411,2026-01-02T10:00:00Z,6.00\n"

    with pytest.raises(InputError) as raised:
        read(data.encode())

    message = str(raised.value)
    assert "names the column 'amount_usd' twice" in message
    assert "at positions 5 and 8 (counting from 1)" in message
    assert "the documented layout reads that column" in message
    assert "Rename or remove one of the two columns" in message


def test_repeated_column_spellings_named():
    header = "Transaction Date,Post Date,Description,Category,Type,Amount,Memo,amount "
    data = f"{header}\n04/03/2024,04/05/2024,APPLE.COM/BILL,Shopping,Sale,-1.23,,-9.99\n"

    with pytest.raises(InputError) as raised:
        read(data.encode())

    message = str(raised.value)
    assert "names the column 'Amount' twice, at positions 6 and 8" in message
    assert "'Amount' and 'amount' are the same column" in message
    assert "the chase layout" in message


def test_repeated_unused_column_ignored():
    data = f"{DOCUMENTED_HEADER},note,note\nt1,u1,Shop,groceries,12.50,5411,2026-01-02T10:00:00Z,a,b\n"

    reader = open_reader(io.BytesIO(data.encode()))
    outcomes = list(reader)

    assert [type(outcome) for outcome in outcomes] == [Row]
    assert outcomes[0].transaction.amount_usd == 12.50
    assert reader.warnings == ["columns 'note', 'note' are not used by the documented layout and are ignored"]


# Currency and other code values.

def documented_row(currency: str) -> bytes:
    return (f"{DOCUMENTED_HEADER},currency\n"
            f"t1,u1,Shop,groceries,12.50,5411,2026-01-02T10:00:00Z,{currency}\n").encode()


@pytest.mark.parametrize("currency", ["US", "$", "euro", "€€€", "E1R"])
def test_currency_not_a_code_named(currency):
    [error] = errors_of(read(documented_row(currency)))

    assert error.column == "currency"
    assert error.value == currency
    assert error.reason == f"currency {currency!r} is not a three-letter ISO 4217 currency code"
    assert error.fix == "use a three-letter ISO 4217 currency code such as EUR or USD"


def test_currency_empty_json_still_empty():
    line = {"transaction_id": "t1", "user_id": "u1", "merchant": "Shop", "amount_usd": "5.00",
            "timestamp": "2026-01-02T10:00:00Z", "currency": ""}

    [error] = errors_of(read(json.dumps(line).encode() + b"\n"))

    assert error.reason == "currency is empty"
    assert error.fix == "fill it in"


def test_currency_empty_csv_means_usd():
    [outcome] = read(documented_row(""))

    assert outcome.transaction.currency == "USD"


def test_merchant_country_not_a_code_named():
    data = (f"{DOCUMENTED_HEADER},merchant_country\n"
            "t1,u1,Shop,groceries,12.50,5411,2026-01-02T10:00:00Z,DEU\n").encode()

    [error] = errors_of(read(data))

    assert error.reason == "merchant_country 'DEU' is not a two-letter ISO 3166-1 alpha-2 country code"
    assert "such as US or GB" in error.fix


def test_too_long_category_cut():
    category = "c" * 129
    data = f"{DOCUMENTED_HEADER}\nt1,u1,Shop,{category},12.50,5411,2026-01-02T10:00:00Z\n".encode()

    [error] = errors_of(read(data))

    assert error.reason == f"category {'c' * 20!r}... is 129 characters long, above the limit of 128"
    assert error.value == "c" * 80 + "..."
    assert error.fix == "shorten it to 128 characters"


def test_ofx_currency_not_a_code_named():
    [error] = errors_of(read(ofx_statement([ofx_purchase(fitid="F1")], currency="US")))

    assert error.column == "CURDEF"
    assert error.value == "US"
    assert "<CURDEF> 'US' is not a three-letter ISO 4217 currency code" in error.reason
    assert "such as EUR or USD" in error.fix


# OFX dates.

def test_ofx_impossible_date_named():
    [error] = errors_of(read(ofx_statement([ofx_purchase(date="20260230", fitid="F1")])))

    assert error.column == "DTPOSTED"
    assert error.value == "20260230"
    assert error.reason == "<DTPOSTED> '20260230' is not a real date (February 2026 has 28 days)"
    assert error.fix.startswith("check the day and month (OFX dates are YYYYMMDD")
    assert "20260228120000[-5:EST]" in error.fix


def test_ofx_iso_date_fix_apart():
    [error] = errors_of(read(ofx_statement([ofx_purchase(date="2026-02-28", fitid="F1")])))

    assert error.reason == "<DTPOSTED> '2026-02-28' is not an OFX date"
    assert error.fix.startswith("write it as 20260228 (OFX dates are YYYYMMDD")


def test_ofx_hour_out_of_range_named():
    [error] = errors_of(read(ofx_statement([ofx_purchase(date="20260228250000", fitid="F1")])))

    assert "hour 25 is out of range" in error.reason
    assert error.fix.startswith("check the time of day (OFX dates")


def test_ofx_missing_date_named():
    entry = "<TRNTYPE>DEBIT<TRNAMT>-12.34<FITID>F1<NAME>CAFE"

    [error] = errors_of(read(ofx_statement([entry])))

    assert error.reason == "the transaction has no <DTPOSTED>"
    assert "OFX dates are YYYYMMDD" in error.fix


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("20260230", "'20260230' is not a real date (February 2026 has 28 days)"),
        ("20261301", "'20261301' is not a real date (month 13 is out of range, months run from 1 to 12)"),
        ("20240101[+99:X]", "'20240101[+99:X]' has a time zone offset of 99 hours, outside -14 to +14"),
        ("2026-02-28T10:11:12", "'2026-02-28T10:11:12' is not an OFX date"),
    ],
)
def test_parse_ofx_time_reason_and_fix(text, reason):
    with pytest.raises(InvalidValueError) as raised:
        parse_ofx_time(text)

    assert raised.value.reason == reason
    assert "OFX dates are YYYYMMDD" in raised.value.fix


def test_parse_ofx_time_iso_datetime_spelled():
    with pytest.raises(InvalidValueError) as raised:
        parse_ofx_time("2026-02-28T10:11:12")

    assert raised.value.fix.startswith("write it as 20260228101112 ")


# Plaid: a repeated transaction_id names the earlier entry with the same base.

def plaid_entry(transaction_id: str) -> dict:
    return {"transaction_id": transaction_id, "account_id": "acc-1", "amount": 4.5, "date": "2024-05-01",
            "name": "Cafe", "pending": False}


def test_plaid_repeat_names_earlier_path():
    document = {"transactions": [plaid_entry(f"t-{index}") for index in range(4)] + [plaid_entry("t-3")]}

    [error] = errors_of(read(json.dumps(document).encode()))

    assert error.column == "transactions[4].transaction_id"
    assert "was already used by transactions[3] (indexes count from 0)" in error.reason
    assert "entry 4" not in error.reason


def test_plaid_repeat_across_arrays():
    document = {"added": [plaid_entry("t-a"), plaid_entry("t-b")],
                "modified": [plaid_entry("t-c"), plaid_entry("t-a")]}

    [error] = errors_of(read(json.dumps(document).encode()))

    assert error.column == "modified[1].transaction_id"
    assert "was already used by added[0] (indexes count from 0)" in error.reason
