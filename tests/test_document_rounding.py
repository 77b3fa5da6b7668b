"""The warning about amounts finer than a cent, for OFX and Plaid documents."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest

from producer import Producer, Rejected, Row, publish_file
from producer.readers import open_reader

ROUNDED = "amounts with more than two decimal places are rounded half up to whole cents"

OFX_HEADER = (
    "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nENCODING:USASCII\nCHARSET:1252\n\n"
    "<OFX><CREDITCARDMSGSRSV1><CCSTMTTRNRS><CCSTMTRS><CURDEF>USD<CCACCTFROM><ACCTID>4111000011119876</CCACCTFROM>"
    "<BANKTRANLIST>\n"
)
OFX_FOOTER = "</BANKTRANLIST></CCSTMTRS></CCSTMTTRNRS></CREDITCARDMSGSRSV1></OFX>\n"


def ofx(*entries: tuple[str, str]) -> bytes:
    """Build a statement with one STMTTRN per (FITID, TRNAMT) pair, the first on line 8."""
    body = "".join(f"<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>20260203<TRNAMT>{amount}<FITID>{fitid}<NAME>Shop</STMTTRN>\n"
                   for fitid, amount in entries)
    return (OFX_HEADER + body + OFX_FOOTER).encode()


def plaid_entry(transaction_id: str, amount: str, **changes) -> dict:
    # plaid_document writes the amount as a JSON number with exactly these digits.
    entry = {"transaction_id": transaction_id, "account_id": "a1", "amount": f"@{amount}@", "date": "2026-02-03",
             "name": "Shop", "pending": False, "iso_currency_code": "USD"}
    entry.update(changes)
    return entry


def plaid_document(*entries: dict) -> bytes:
    text = json.dumps({"added": list(entries)}, indent=2)
    return text.replace('"@', "").replace('@"', "").encode()


def read_with_warnings(data: bytes) -> tuple[list, list[str]]:
    reader = open_reader(io.BytesIO(data), name="input")
    return list(reader), reader.warnings


def rounding(warnings: list[str]) -> list[str]:
    return [warning for warning in warnings if warning.startswith(ROUNDED)]


def test_ofx_sub_cent_amount_warned():
    outcomes, warnings = read_with_warnings(ofx(("A1", "-4.00"), ("A2", "-7.005"), ("A3", "-2.129")))

    assert [str(outcome.transaction.amount_usd) for outcome in outcomes] == ["4.00", "7.01", "2.13"]
    assert rounding(warnings) == [f"{ROUNDED} (first on line 9: 7.005 becomes 7.01)"]


def test_ofx_decimal_comma_sub_cent_warned():
    outcomes, warnings = read_with_warnings(ofx(("A1", "-12,345")))

    assert str(outcomes[0].transaction.amount_usd) == "12.35"
    assert rounding(warnings) == [f"{ROUNDED} (first on line 8: 12.345 becomes 12.35)"]


def test_ofx_whole_cents_not_warned():
    _, warnings = read_with_warnings(ofx(("A1", "-4.000"), ("A2", "-7,10")))

    assert rounding(warnings) == []


def test_ofx_rounding_skips_rejected_entry():
    # A2 repeats A1's FITID, so it is rejected, and the warning names A3.
    outcomes, warnings = read_with_warnings(ofx(("A1", "-4.00"), ("A1", "-7.005"), ("A3", "-2.129")))

    assert [type(outcome) for outcome in outcomes] == [Row, Rejected, Row]
    assert rounding(warnings) == [f"{ROUNDED} (first on line 10: 2.129 becomes 2.13)"]


def test_plaid_sub_cent_amount_warned():
    data = plaid_document(plaid_entry("p1", "4.00"), plaid_entry("p2", "10.005"), plaid_entry("p3", "2.129"))

    outcomes, warnings = read_with_warnings(data)

    assert [str(outcome.transaction.amount_usd) for outcome in outcomes] == ["4.00", "10.01", "2.13"]
    assert rounding(warnings) == [f"{ROUNDED} (first on added[1].amount: 10.005 becomes 10.01)"]


def test_plaid_rounding_names_second_array():
    document = {"added": [plaid_entry("p1", "4.00")], "modified": [plaid_entry("p2", "3.333")]}
    data = json.dumps(document, indent=2).replace('"@', "").replace('@"', "").encode()

    outcomes, warnings = read_with_warnings(data)

    assert [str(outcome.transaction.amount_usd) for outcome in outcomes] == ["4.00", "3.33"]
    assert rounding(warnings) == [f"{ROUNDED} (first on modified[0].amount: 3.333 becomes 3.33)"]


def test_plaid_rounding_skips_rejected_entry():
    data = plaid_document(plaid_entry("p1", "10.005", date="2026-02-30"), plaid_entry("p2", "2.129"))

    outcomes, warnings = read_with_warnings(data)

    assert [type(outcome) for outcome in outcomes] == [Rejected, Row]
    assert rounding(warnings) == [f"{ROUNDED} (first on added[1].amount: 2.129 becomes 2.13)"]


@pytest.mark.parametrize("dedup_window_seconds", [0, 86400])
def test_publish_rounding_skips_unconverted_entry(sync_client, keys, tmp_path, dedup_window_seconds):
    # With deduplication on, a small file is read whole before its rows are converted.
    source = tmp_path / "plaid.json"
    source.write_bytes(plaid_document(plaid_entry("p1", "10.001", iso_currency_code="EUR"),
                                      plaid_entry("p2", "4.00"), plaid_entry("p3", "7.129")))
    producer = Producer(sync_client, keys, max_backlog=None, dedup_window_seconds=dedup_window_seconds)

    summary = publish_file(sync_client, keys, source, rejects_path=tmp_path / "r.jsonl", progress=False,
                           producer=producer)

    assert (summary.published, summary.rejected) == (2, 1)
    assert rounding(summary.warnings) == [f"{ROUNDED} (first on added[2].amount: 7.129 becomes 7.13)"]


def test_publish_ofx_rounding_warned(sync_client, keys, tmp_path):
    producer = Producer(sync_client, keys, max_backlog=None)

    summary = publish_file(sync_client, keys, io.BytesIO(ofx(("A1", "-7.005"))), rejects_path=tmp_path / "r.jsonl",
                           progress=False, producer=producer)

    assert summary.published == 1
    assert rounding(summary.warnings) == [f"{ROUNDED} (first on line 8: 7.005 becomes 7.01)"]

