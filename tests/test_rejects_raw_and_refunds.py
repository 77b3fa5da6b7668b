"""A currency reject keeps the input as read, and skip reasons write refund amounts with two decimals.

A row in a currency without a rate is rejected after it was read, by
``to_usd``. Its ``raw`` is the line (or, for Plaid JSON, the entry) as read,
like every other reject's, not the transaction written out again.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from rich.console import Console

from conftest import one_server
from producer import Producer, Rejected, Row, Skipped, publish_file, read_transactions
from producer.values import format_amount

CSV_HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp,currency"
EUR_CSV = "c-1,u1,Shop,,5.00,,2026-11-03,EUR"
EUR_JSONL = '{"transaction_id":"j-11","user_id":"u1","merchant":"Shop","amount_usd":5,"timestamp":"2026-11-03","currency":"EUR"}'
PLAID_ENTRY = {
    "transaction_id": "p-1", "account_id": "acc-1", "amount": 5, "date": "2026-11-03", "name": "Shop",
    "pending": False, "iso_currency_code": "EUR",
}


def read(data: str) -> list:
    return list(read_transactions(io.BytesIO(data.encode())))


# The raw text of a currency reject

def test_csv_currency_reject_keeps_line():
    (outcome,) = read(f"{CSV_HEADER}\n{EUR_CSV}\n")

    assert isinstance(outcome, Rejected)
    assert outcome.error.column == "currency"
    assert outcome.raw == EUR_CSV


def test_jsonl_currency_reject_keeps_line():
    (outcome,) = read(EUR_JSONL + "\n")

    assert isinstance(outcome, Rejected)
    assert outcome.error.column == "currency"
    assert outcome.raw == EUR_JSONL


def test_plaid_currency_reject_keeps_entry():
    (outcome,) = read(json.dumps({"accounts": [], "transactions": [PLAID_ENTRY]}, indent=2))

    assert isinstance(outcome, Rejected)
    assert outcome.error.column == "currency"
    assert json.loads(outcome.raw) == PLAID_ENTRY


def test_usd_row_keeps_no_raw():
    (outcome,) = read(f"{CSV_HEADER}\nc-2,u1,Shop,,5.00,,2026-11-03,USD\n")

    assert isinstance(outcome, Row)
    assert outcome.raw is None


def test_row_without_raw_rejects_as_json():
    """A Row that a caller builds without its text is rejected with the transaction in JSON."""
    from producer.readers import to_usd
    from rewardpilot.fx import CurrencyConverter

    (read_row,) = list(read_transactions(io.BytesIO((EUR_JSONL + "\n").encode()),
                                         converter=CurrencyConverter(unconverted="keep")))
    outcome = to_usd(CurrencyConverter(), Row(read_row.line, read_row.transaction))

    assert isinstance(outcome, Rejected)
    assert json.loads(outcome.raw)["transaction_id"] == "j-11"


@one_server
def test_rejects_file_keeps_jsonl_line(sync_client, keys, tmp_path):
    rejects = tmp_path / "mine.rejects.jsonl"

    summary = publish_file(sync_client, keys, io.BytesIO((EUR_JSONL + "\n").encode()), rejects_path=rejects,
                           progress=False, producer=Producer(sync_client, keys, max_backlog=None),
                           console=Console(file=io.StringIO()))

    assert summary.rejected == 1
    (record,) = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert record["raw"] == EUR_JSONL


# Refund amounts in skip reasons

@pytest.mark.parametrize(
    ("data", "written"),
    [
        ('{"transaction_id":"j-1","user_id":"u1","merchant":"Shop","amount_usd":-500,"timestamp":"2026-11-03"}\n',
         "500.00"),
        (f"{CSV_HEADER}\nc-3,u1,Shop,,-500.0,,2026-11-03,USD\n", "500.00"),
        ("Transaction Date,Posted Date,Card No.,Description,Category,Debit,Credit\n"
         "2024-05-01,2024-05-02,1234,REFUND,Other,,1000.00\n", "1000.00"),
        ("date,name,amount,pending,account_id,transaction_id,iso_currency_code\n"
         "2024-05-01,Shop,-500.0,False,acc-1,p-2,USD\n", "500.00"),
        (json.dumps({"accounts": [], "transactions": [dict(PLAID_ENTRY, amount=-500, iso_currency_code="USD")]}),
         "500.00"),
        ("OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\n\n<OFX><CREDITCARDMSGSRSV1><CCSTMTTRNRS><CCSTMTRS>"
         "<CURDEF>USD<BANKTRANLIST>\n<STMTTRN><TRNTYPE>CREDIT<DTPOSTED>20240501<TRNAMT>500<FITID>F1<NAME>Shop"
         "</STMTTRN>\n</BANKTRANLIST></CCSTMTRS></CCSTMTTRNRS></CREDITCARDMSGSRSV1></OFX>\n", "500.00"),
    ],
    ids=["jsonl", "csv", "capital-one", "plaid-csv", "plaid-json", "ofx"],
)
def test_refund_amount_two_decimals(data, written):
    (outcome,) = read(data)

    assert isinstance(outcome, Skipped)
    assert f"credit of {written}, not a purchase" in outcome.reason


@pytest.mark.parametrize(
    ("amount", "written"),
    [("500", "500.00"), ("500.0", "500.00"), ("1000.00", "1000.00"), ("0.1", "0.10"), ("1.2300", "1.23"),
     ("1E+3", "1000.00"), ("0.004", "0.004"), ("12.345", "12.345"), ("1E+26", "100000000000000000000000000")],
)
def test_format_amount(amount, written):
    assert format_amount(Decimal(amount)) == written
