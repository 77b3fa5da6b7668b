"""Amounts and timestamps of number types other than int, float and Decimal, such as NumPy scalars."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction

import pytest
from pydantic import ValidationError

from rewardpilot.models import Transaction

UTC = timezone.utc


def make(**overrides) -> Transaction:
    fields = dict(transaction_id="t1", user_id="u1", merchant="Shell", category="gas",
                  amount_usd="19.99", mcc="5541", timestamp="2026-01-01T12:00:00Z")
    fields.update(overrides)
    return Transaction(**fields)


def amount_error(amount) -> str:
    with pytest.raises(ValidationError) as raised:
        make(amount_usd=amount)
    return raised.value.errors()[0]["msg"]


class OddFloat(float):
    """A float subclass whose repr is not a number, as NumPy 2 writes np.float64(19.99)."""

    def __repr__(self) -> str:
        return f"OddFloat({float(self)!r})"


def test_float_subclass_amount_read():
    assert make(amount_usd=OddFloat(19.99)).amount_usd == Decimal("19.99")


def test_float_subclass_same_as_float():
    for value in (0.1, 2.675, 12.345, 1e-2, 9999999.99):
        assert make(amount_usd=OddFloat(value)).amount_usd == make(amount_usd=value).amount_usd


def test_float_subclass_message_plain():
    message = amount_error(OddFloat(-5.0))

    assert message.startswith("Value error, amount_usd -5.0 is not a purchase")
    assert "OddFloat" not in message


def test_fraction_amount_read():
    assert make(amount_usd=Fraction(1999, 100)).amount_usd == Decimal("19.99")


def test_numpy_amounts_read():
    numpy = pytest.importorskip("numpy")

    assert make(amount_usd=numpy.float64(19.99)).amount_usd == Decimal("19.99")
    assert make(amount_usd=numpy.float32(19.99)).amount_usd == Decimal("19.99")
    assert make(amount_usd=numpy.int64(5)).amount_usd == Decimal("5.00")
    assert make(amount_usd=numpy.float64(2.675)).amount_usd == make(amount_usd=2.675).amount_usd


@pytest.mark.parametrize(("value", "start"), [
    ("nan", "Value error, amount_usd nan is not a finite number"),
    ("-5", "Value error, amount_usd -5.0 is not a purchase"),
    ("0.001", "Value error, amount_usd 0.001 rounds to $0.00"),
    ("2e7", "Value error, amount_usd 20000000.0 is above the limit"),
])
def test_numpy_amount_messages_plain(value, start):
    numpy = pytest.importorskip("numpy")

    message = amount_error(numpy.float64(value))

    assert message.startswith(start)
    assert "np." not in message


def test_numpy_int_date_is_date():
    """An int64 of 8 digits is a date YYYYMMDD, as the int is, not Unix time in 1970."""
    numpy = pytest.importorskip("numpy")

    assert make(timestamp=numpy.int64(20240501)).timestamp == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_numpy_unix_time_read():
    numpy = pytest.importorskip("numpy")

    assert make(timestamp=numpy.int64(1714566600)).timestamp == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert make(timestamp=numpy.float64(1714566600.0)).timestamp == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def test_numpy_early_unix_time_rejected():
    """A small int64 gets the same check as a small int: before 1973 it is more likely another value."""
    numpy = pytest.importorskip("numpy")

    with pytest.raises(ValidationError, match="read as Unix time is 1970"):
        make(timestamp=numpy.int64(5_000_000))
