"""The canonical fast path builds what full validation builds, and declines what it rejects."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pydantic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewardpilot.canonical import canonical_transaction, transaction_from_json
from rewardpilot.codec import decode_transaction, encode_transaction
from rewardpilot.models import MAX_ID_LENGTH, Transaction

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "a ", " a", "Whole Foods", "caf\u00e9", "\u00a0x", "x\u2003", "\ud800", "t" * MAX_ID_LENGTH,
                     "t" * (MAX_ID_LENGTH + 1), "\x1cx", "x\x1f"]),
)
amounts = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True, places=None),
    st.sampled_from([Decimal("0.001"), Decimal("0.005"), Decimal("-1"), Decimal("0"), Decimal("10000000.00"),
                     Decimal("10000000.01"), Decimal("1E+3"), Decimal("12.5"), Decimal("12.345")]),
    st.sampled_from(["12.50", " 12.50", "1e3", "abc", 12.5, 3]),
)
mccs = st.one_of(st.none(), st.sampled_from(["5411", "", "742", "5411.0", "\u0665\u0664\u0661\u0661", "54111", " 5411", "abcd", 5411]))
zones = st.sampled_from([timezone.utc, timezone(timedelta(hours=-5)), timezone(timedelta(0)), None])
timestamps = st.one_of(
    st.builds(lambda moment, zone: moment.replace(tzinfo=zone),
              st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)), zones),
    st.sampled_from(["2026-11-01T00:16:18Z", "2026-11-01", "not a time"]),
)
optional = st.fixed_dictionaries({}, optional={
    "currency": st.sampled_from(["USD", "usd", "EUR", "eu", "EURO", "\u00e9ur", 1]),
    "merchant_country": st.sampled_from(["US", "us", "USA", "U", None, "\u00e9s"]),
    "card_used": st.one_of(st.none(), texts),
    "original_amount": st.sampled_from([None, Decimal("5.50")]),
    "unknown": st.just("x"),
})


@st.composite
def reader_values(draw) -> dict:
    values = {
        "transaction_id": draw(texts), "user_id": draw(texts), "merchant": draw(texts),
        "amount_usd": draw(amounts), "timestamp": draw(timestamps),
    }
    if draw(st.booleans()):
        values["category"] = draw(texts)
    if draw(st.booleans()):
        values["mcc"] = draw(mccs)
    values.update(draw(optional))
    return values


def full_validation(values: dict) -> Transaction | None:
    try:
        return Transaction.model_validate(values)
    except pydantic.ValidationError:
        return None


def assert_same(fast: Transaction, full: Transaction | None) -> None:
    assert full is not None, "the fast path accepted what full validation rejects"
    assert fast == full
    assert fast.model_dump_json() == full.model_dump_json()
    assert fast.model_fields_set == full.model_fields_set


@SETTINGS
@given(reader_values())
def test_reader_values_agree(values):
    fast = canonical_transaction(values)
    if fast is not None:
        assert_same(fast, full_validation(values))


@SETTINGS
@given(reader_values())
def test_json_documents_agree(values):
    document = json.dumps({name: str(value) if isinstance(value, (Decimal, datetime)) else value
                           for name, value in values.items()}, default=str)
    fast = transaction_from_json(document)
    if fast is not None:
        try:
            full = Transaction.model_validate_json(document)
        except pydantic.ValidationError:
            full = None
        assert_same(fast, full)


@SETTINGS
@given(reader_values())
def test_encoded_entries_take_fast_path(values):
    full = full_validation(values)
    if full is None or full.original_amount is not None:
        return
    entry = encode_transaction(full)

    fast = transaction_from_json(entry["data"])

    assert fast is not None
    assert_same(fast, Transaction.model_validate_json(entry["data"]))
    assert decode_transaction(entry) == full


def test_example_rows_take_fast_paths():
    with (ROOT / "examples" / "transactions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        values = {name: value or None for name, value in row.items()}
        full = Transaction.model_validate(values)
        values["amount_usd"] = Decimal(values["amount_usd"])
        values["timestamp"] = full.timestamp
        values["category"] = values["category"] or ""

        fast = canonical_transaction(values)
        entry = encode_transaction(full)["data"]
        from_entry = transaction_from_json(entry)

        assert fast is not None, row
        assert_same(fast, full)
        assert from_entry is not None, row
        assert_same(from_entry, Transaction.model_validate_json(entry))


def test_declined_cases():
    base = {"transaction_id": "t1", "user_id": "u1", "merchant": "Shell", "amount_usd": Decimal("40.00"),
            "mcc": "5541", "timestamp": datetime(2026, 11, 1, tzinfo=timezone.utc)}
    assert canonical_transaction(base) is not None
    for change in [{"merchant": " Shell"}, {"amount_usd": Decimal("0")}, {"amount_usd": "40.00"}, {"mcc": "541"},
                   {"timestamp": datetime(2026, 11, 1)}, {"unknown": 1}, {"transaction_id": ""}]:
        assert canonical_transaction({**base, **change}) is None, change
    assert transaction_from_json(b'{"transaction_id": "t1"}') is None
    assert transaction_from_json(b"not json") is None


def test_amount_rounding_to_zero_rejected():
    for text in ["0.004975", "0.001", "0.0049"]:
        try:
            Transaction(transaction_id="t1", user_id="u1", merchant="Shell", amount_usd=text)
        except pydantic.ValidationError as error:
            assert "rounds to $0.00" in str(error)
            assert text in str(error)
        else:
            raise AssertionError(f"{text} was accepted")
    assert Transaction(transaction_id="t1", user_id="u1", merchant="Shell", amount_usd="0.005").amount_usd == Decimal("0.01")


def test_mcc_in_other_digits_rejected():
    try:
        Transaction(transaction_id="t1", user_id="u1", merchant="Shell", amount_usd="5.00", mcc="\u0665\u0664\u0661\u0661")
    except pydantic.ValidationError as error:
        assert "4-digit ISO 18245" in str(error)
    else:
        raise AssertionError("an MCC in Arabic-Indic digits was accepted")
