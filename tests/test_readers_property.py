"""Readers raise nothing but the producer's own errors, whatever the input."""

from __future__ import annotations

import io
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer import InputError, Rejected, Row, Skipped, read_transactions

HEADER = b"transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def consume(data: bytes, **options) -> list:
    try:
        outcomes = list(read_transactions(io.BytesIO(data), **options))
    except InputError:
        return []
    for outcome in outcomes:
        assert isinstance(outcome, (Row, Rejected, Skipped))
    return outcomes


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes(data):
    consume(data)


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes_after_header(data):
    consume(HEADER + data)


@FAST
@given(st.lists(st.lists(st.text(max_size=30), min_size=0, max_size=9), max_size=6))
def test_arbitrary_text_rows(rows):
    body = "\n".join(",".join(fields) for fields in rows)
    outcomes = consume(HEADER + body.encode("utf-8", "surrogatepass"))

    for outcome in outcomes:
        if isinstance(outcome, Row):
            assert outcome.transaction.amount_usd > 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(["transaction_id", "user_id", "merchant", "category", "amount_usd", "mcc", "timestamp", "other"])


@FAST
@given(st.lists(st.dictionaries(fields, json_values, max_size=8) | json_values, min_size=1, max_size=5))
def test_arbitrary_json_lines(values):
    text = "\n".join(json.dumps(value) for value in values)

    consume(text.encode("utf-8", "surrogatepass"), format="jsonl")


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes_as_ofx(data):
    consume(data, format="ofx")
    consume(b"OFXHEADER:100\nCHARSET:1252\n\n<OFX><CCSTMTRS><STMTTRN>" + data)


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes_as_plaid(data):
    consume(data, format="plaid")
    consume(b'{"transactions": [' + data)


@FAST
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["transaction_id", "amount", "date", "name", "pending", "account_id", "location",
                         "personal_finance_category", "iso_currency_code", "category"]),
        children, max_size=8),
    max_leaves=20,
))
def test_arbitrary_plaid_entries(entry):
    consume(json.dumps({"added": [entry], "removed": [entry]}).encode(), format="plaid")
