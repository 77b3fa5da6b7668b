from datetime import datetime, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from rewardpilot.models import Transaction


def make(**overrides):
    fields = dict(
        transaction_id="t1", user_id="u1", merchant="Whole Foods", category="groceries",
        amount_usd="42.10", mcc="5411", timestamp="2024-03-01T12:00:00Z",
    )
    fields.update(overrides)
    return Transaction(**fields)


def test_mcc_leading_zero_restored():
    assert make(mcc=742).mcc == "0742"
    assert make(mcc="742").mcc == "0742"
    assert make(mcc="5411.0").mcc == "5411"


def test_mcc_empty_is_none():
    assert make(mcc="").mcc is None


@pytest.mark.parametrize("bad", ["54111", "ABCD", "54-1", True])
def test_mcc_invalid_rejected(bad):
    with pytest.raises(ValidationError, match="4-digit|merchant category code"):
        make(mcc=bad)


def test_amount_rounded_to_cents_half_up():
    assert make(amount_usd="12.345").amount_usd == Decimal("12.35")
    assert make(amount_usd=0.1).amount_usd == Decimal("0.10")


@pytest.mark.parametrize("bad", ["-5.00", "0", "abc", "NaN", "20000000"])
def test_amount_invalid_rejected(bad):
    with pytest.raises(ValidationError, match="amount_usd"):
        make(amount_usd=bad)


def test_naive_timestamp_is_utc():
    assert make(timestamp="2024-03-01T12:00:00").timestamp == datetime(2024, 3, 1, 12, tzinfo=timezone.utc)


def test_aware_timestamp_converted_to_utc():
    stamp = make(timestamp="2024-03-01T07:00:00-05:00").timestamp
    assert stamp == datetime(2024, 3, 1, 12, tzinfo=timezone.utc)
    assert stamp.utcoffset().total_seconds() == 0


def test_date_only_timestamp_is_noon_utc():
    """Noon keeps the printed date in every U.S. zone, where cap periods and quarters end."""
    assert make(timestamp="2024-03-01").timestamp == datetime(2024, 3, 1, 12, tzinfo=timezone.utc)


def test_midnight_given_explicitly_stays_midnight():
    assert make(timestamp="2024-03-01T00:00:00Z").timestamp == datetime(2024, 3, 1, tzinfo=timezone.utc)


def test_json_round_trip():
    original = make()
    assert Transaction.model_validate_json(original.model_dump_json()) == original
