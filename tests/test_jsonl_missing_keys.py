"""A JSON lines object without a required key is rejected as "missing", not "empty".

When the object has a key that no transaction field reads, the reject's fix
names it, so a misspelled key such as 'userid' is linked to the missing
'user_id'.
"""

from __future__ import annotations

import io

import pytest

from producer import Rejected, Row, read_transactions

FULL = {"transaction_id": "m-1", "user_id": "u1", "merchant": "Shell", "amount_usd": "10", "timestamp": "2026-11-03"}


def line_without(key: str, **extra: str) -> str:
    """Return FULL as one JSON line, without ``key`` and with ``extra`` keys added."""
    values = {name: value for name, value in FULL.items() if name != key}
    values.update(extra)
    return "{" + ", ".join(f'"{name}": "{value}"' for name, value in values.items()) + "}"


def reject_of(line: str) -> Rejected:
    (outcome,) = list(read_transactions(io.BytesIO((line + "\n").encode())))
    assert isinstance(outcome, Rejected), outcome
    return outcome


@pytest.mark.parametrize("key", list(FULL))
def test_missing_key_named_missing(key):
    error = reject_of(line_without(key)).error

    assert error.column == key
    assert error.reason == f"{key} is missing"
    assert "is empty" not in error.message
    assert f'"{key}":' in error.fix


@pytest.mark.parametrize(
    ("key", "misspelled"),
    [("user_id", "userid"), ("user_id", "User_ID"), ("amount_usd", "amount"), ("transaction_id", "transactionid"),
     ("merchant", "merchant_name"), ("timestamp", "time")],
)
def test_misspelled_key_named_in_fix(key, misspelled):
    error = reject_of(line_without(key, **{misspelled: FULL[key]})).error

    assert error.reason == f"{key} is missing"
    assert error.fix == f"the row has {misspelled!r}, did you mean {key!r}? Rename the key"


def test_typo_file_messages():
    lines = [
        '{"user_id":"u","merchant":"Shell","amount_usd":10,"timestamp":"2026-11-03"}',
        '{"transaction_id":"ty-1","user_id":"u","merchant":"Shell","amount":10,"timestamp":"2026-11-03"}',
        '{"transaction_id":"ty-2","userid":"u","merchant":"Shell","amount_usd":10,"timestamp":"2026-11-03"}',
    ]
    outcomes = list(read_transactions(io.BytesIO(("\n".join(lines) + "\n").encode())))

    assert [outcome.error.message for outcome in outcomes] == [
        "line 1, column 'transaction_id': transaction_id is missing; add it, like \"transaction_id\": \"tx-1001\"",
        "line 2, column 'amount_usd': amount_usd is missing; the row has 'amount', did you mean 'amount_usd'? "
        "Rename the key",
        "line 3, column 'user_id': user_id is missing; the row has 'userid', did you mean 'user_id'? Rename the key",
    ]


def test_unrelated_unknown_key_listed():
    error = reject_of(line_without("timestamp", ts="2026-11-03", zz="1")).error

    assert error.reason == "timestamp is missing"
    assert error.fix.startswith('add it as an ISO 8601 string, like "timestamp": "2024-')
    assert error.fix.endswith(". The row has 'ts' and 'zz', which are not transaction fields")


def test_empty_value_still_empty():
    error = reject_of(line_without("user_id", user_id="")).error

    assert error.reason == "user_id is empty"
    assert error.fix == "fill it in"


def test_known_optional_key_not_offered():
    """card_used is a transaction field, so it is never offered as a misspelling of a missing key."""
    error = reject_of(line_without("user_id", card_used="amex-gold")).error

    assert error.fix == 'add it, like "user_id": "user-1001"'


def test_csv_empty_cell_still_empty():
    data = b"transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\nc-1,,Shell,gas,10.00,5541,2026-11-03\n"

    (outcome,) = list(read_transactions(io.BytesIO(data)))

    assert isinstance(outcome, Rejected)
    assert outcome.error.reason == "user_id is empty"


def test_full_line_read():
    (outcome,) = list(read_transactions(io.BytesIO((line_without("none") + "\n").encode())))

    assert isinstance(outcome, Row)
