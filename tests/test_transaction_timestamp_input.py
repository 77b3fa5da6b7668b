"""How Transaction reads a timestamp given through the Python API, and the fix for a boolean mcc."""

from __future__ import annotations

import io
import json
from datetime import date, datetime, timezone

import pytest
from pydantic import ValidationError

from producer import Rejected, read_transactions
from rewardpilot.models import Transaction

FIELDS = {"transaction_id": "x1", "user_id": "u1", "merchant": "M", "category": "dining", "amount_usd": "10.00",
          "mcc": "5812"}
NOON_MAY_FIRST = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)


def timestamp_of(value: object) -> datetime:
    return Transaction.model_validate({**FIELDS, "timestamp": value}).timestamp


def rejection(value: object) -> str:
    with pytest.raises(ValidationError) as raised:
        Transaction.model_validate({**FIELDS, "timestamp": value})
    return raised.value.errors(include_url=False)[0]["msg"]


@pytest.mark.parametrize("value", ["20240501", " 20240501 ", 20240501, "2024-05-01", date(2024, 5, 1)])
def test_date_forms_read_as_noon_utc(value):
    assert timestamp_of(value) == NOON_MAY_FIRST


def test_compact_date_read_as_csv_reads_it():
    data = (",".join([*FIELDS, "timestamp"]) + "\n" + ",".join([*FIELDS.values(), "20240501"]) + "\n").encode()

    from_csv = list(read_transactions(io.BytesIO(data)))[0].transaction

    assert from_csv.timestamp == timestamp_of("20240501")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1714564800, datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),  # Unix seconds
        ("1714564800", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
        (1714564800000, datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),  # milliseconds, above 2e10
        (1714564800.5, datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=timezone.utc)),
        (100_000_000, datetime(1973, 3, 3, 9, 46, 40, tzinfo=timezone.utc)),  # the earliest number accepted
    ],
)
def test_unix_time_read_as_pydantic_reads_it(value, expected):
    assert timestamp_of(value) == expected


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (12345, "timestamp 12345 read as Unix time is 1970-01-01T03:25:45+00:00, before 1973-03-03"),
        ("12345", "timestamp '12345' read as Unix time is 1970-01-01T03:25:45+00:00, before 1973-03-03"),
        (0, "timestamp 0 read as Unix time is 1970-01-01T00:00:00+00:00"),
        (-86400, "timestamp -86400 read as Unix time is 1969-12-31T00:00:00+00:00"),
        ("-123456789", "timestamp '-123456789' read as Unix time is 1966-02-02T02:26:51+00:00"),
        (99_999_999, "timestamp 99999999 has 8 digits, so it is read as a date YYYYMMDD"),
        (20240501.0, "timestamp 20240501.0 read as Unix time is 1970-08-23T06:21:41+00:00"),
        (20_000_000_001, "timestamp 20000000001 read as Unix time is 1970-08-20T11:33:20.001000+00:00"),
    ],
)
def test_implausible_unix_time_rejected(value, shown):
    message = rejection(value)

    assert shown in message
    assert "write an ISO 8601 date or time such as 2024-05-01" in message


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("20240230", "day is out of range for month"),
        (20241301, "month must be in 1..12"),
        ("12345678", "month must be in 1..12"),
    ],
)
def test_compact_date_that_does_not_exist_rejected(value, reason):
    message = rejection(value)

    assert "has 8 digits, so it is read as a date YYYYMMDD, and that date does not exist" in message
    assert reason in message
    assert "20240501" in message


def test_compact_date_before_1900_rejected():
    assert "before 1900-01-01" in rejection("18991231")


def test_missing_timestamp_is_now():
    before = datetime.now(timezone.utc)

    stamp = Transaction.model_validate(FIELDS).timestamp

    assert before <= stamp <= datetime.now(timezone.utc)


def test_boolean_mcc_message_has_fix():
    with pytest.raises(ValidationError) as raised:
        Transaction.model_validate({**FIELDS, "mcc": True, "timestamp": "2024-05-01"})

    message = raised.value.errors(include_url=False)[0]["msg"]
    assert message.endswith("mcc True is a boolean, not a merchant category code; "
                            "write the 4-digit code like 5411, or leave it empty")


def test_json_lines_boolean_mcc_fix():
    line = json.dumps({**FIELDS, "mcc": True, "timestamp": "2024-05-01T10:00:00Z"}) + "\n"

    outcome = list(read_transactions(io.BytesIO(line.encode())))[0]

    assert isinstance(outcome, Rejected)
    assert outcome.error.column == "mcc"
    assert outcome.error.fix == "write the 4-digit code like 5411, or leave it empty"
