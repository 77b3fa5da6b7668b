"""The records that travel on the streams: transactions in, recommendations out.

Both sides validate with these models, so a transaction that passed the
producer is a transaction the consumer can decode. Times are timezone-aware
UTC inside the product; amounts follow the rounding rules in ``money``.
"""

from __future__ import annotations

import numbers
import re
from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, field_validator

from rewardpilot.money import to_cents

MAX_ID_LENGTH = 128
MAX_MERCHANT_LENGTH = 256
MAX_CATEGORY_LENGTH = 128
MAX_AMOUNT_USD = Decimal("10000000")  # $10 million: above any card's credit line

# The time of day given to a date without one, in UTC unless a reader knows
# the zone. Noon stays on the same calendar date from UTC-11 to UTC+11, so cap
# periods, quarters and monthly reports see the date the bank printed.
DATE_ONLY_TIME = time(12)

# The earliest purchase time accepted. General-purpose payment cards date
# from 1950 (Diners Club), so an earlier date is a wrong one. Typical causes
# are a year missing its century (0024) and a spreadsheet's day zero
# (1899-12-30). The engine cannot even move 0001-01-01T00:00:00Z into a U.S.
# card's zone. Dates from here to 1970 are accepted, and publish_file warns about them.
EARLIEST_TIMESTAMP = datetime(1900, 1, 1, tzinfo=timezone.utc)
EARLIEST_TIMESTAMP_FIX = "check the date and its format, and write a date from 1900-01-01 on"

# The first purchase time rejected as too late. Python's datetime ends at
# 9999-12-31. The engine moves a purchase time into the card's time zone, and
# reports compute the end of its cap period and the month after it. Near the
# end of 9999 these fail with "year 10000 is out of range", so the bound leaves
# centuries of room. A date this far ahead is a placeholder or a typing error.
LATEST_TIMESTAMP = datetime(9000, 1, 1, tzinfo=timezone.utc)
LATEST_TIMESTAMP_FIX = "check the date and its format, and write a date before 9000-01-01"

# The earliest time a number is accepted for as Unix time: 10**8 seconds, 1973-03-03T09:46:40Z. A number
# below it has at most 8 digits as seconds, or 11 as milliseconds. Such a number is more likely a date
# written without separators, an amount or an id than a purchase time.
EARLIEST_UNIX_TIME = datetime(1973, 3, 3, 9, 46, 40, tzinfo=timezone.utc)
TIMESTAMP_FIX = ("write an ISO 8601 date or time such as 2024-05-01 or 2024-05-01T12:30:00Z, a date as YYYYMMDD "
                 "such as 20240501, or Unix seconds such as 1714566600")

_UNIX_TIME_TEXT = re.compile(r"^[+-]?[0-9]+(?:\.[0-9]+)?$")  # a number as text, which pydantic reads as Unix time
_DATETIME = TypeAdapter(datetime)  # pydantic's reading of a datetime field, for numbers read as Unix time

_MCC_PATTERN = re.compile(r"^[0-9]{1,4}$")  # ASCII digits only: \d would also match digits of other scripts

WalletSource = Literal["user", "run", "catalog"]


def _shown(value: object) -> str:
    """Show an input value in a message: text quoted, numbers as written (not ``Decimal('1.5')``)."""
    return repr(value) if isinstance(value, str) else str(value)


def _compact_date(value: str | int) -> datetime:
    """Return the date YYYYMMDD ``value`` at noon UTC; raise ``ValueError`` for a date that does not exist."""
    text = str(value).strip()
    try:
        day = date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError as error:
        raise ValueError(f"timestamp {_shown(value)} has 8 digits, so it is read as a date YYYYMMDD, and that date "
                         f"does not exist ({error}); {TIMESTAMP_FIX}") from None
    return datetime.combine(day, DATE_ONLY_TIME, tzinfo=timezone.utc)


def _unix_time(value: object) -> object:
    """Return the time pydantic reads from the number ``value``; raise ``ValueError`` before ``EARLIEST_UNIX_TIME``.

    A value pydantic cannot read is returned as it is, for pydantic's own error.
    """
    try:
        moment = _DATETIME.validate_python(value)
    except ValidationError:
        return value
    if moment < EARLIEST_UNIX_TIME:
        raise ValueError(f"timestamp {_shown(value)} read as Unix time is {moment.isoformat()}, before "
                         f"{EARLIEST_UNIX_TIME.date().isoformat()}, so it is more likely another value than "
                         f"a purchase time; {TIMESTAMP_FIX}")
    return moment


def _amount_text(value: object) -> str:
    """Return an amount as text that ``Decimal`` reads, for a string, a number or a NumPy scalar.

    A float, or a float subclass such as ``numpy.float64``, becomes its
    shortest repr as a float ("19.99"). The repr of a subclass may differ,
    such as "np.float64(19.99)" in NumPy 2. A fraction becomes a decimal.
    Other numbers, such as ``numpy.float32`` and ``numpy.int64``, become
    their ``str``, which NumPy writes as the shortest decimal of the value.
    """
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, (str, int, Decimal)) or not isinstance(value, numbers.Real):
        return str(value).strip()
    if isinstance(value, numbers.Rational):
        return str(Decimal(int(value.numerator)) / Decimal(int(value.denominator)))
    text = str(value).strip()
    try:
        Decimal(text)
    except (InvalidOperation, ValueError):
        return float.__repr__(float(value))
    return text


def _plain_number(value: object) -> object:
    """Return a number of a type other than int, float and Decimal (a NumPy scalar, a Fraction) as an int or float.

    Other values are returned unchanged. So ``numpy.int64(20240501)`` is a
    date, as the int is, not Unix time.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, (int, float, Decimal)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class Transaction(BaseModel):
    """One card purchase, in the documented CSV layout plus optional extras.

    The documented layout is
    ``transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp``.
    ``currency``, ``merchant_country`` and ``card_used`` are filled by readers
    of bank exports that carry them. ``currency`` is the currency the
    purchase was made in. When the amount was converted to USD
    (``rewardpilot.fx``), ``original_amount`` and ``original_currency`` are
    the amount as read, ``usd_per_unit`` is the rate applied and
    ``rate_date`` the date of that rate (None for an undated rate). All four
    are None for an amount that was never converted.

    ``timestamp`` is read as the CSV reader reads the documented layout,
    plus Unix time:

    * a ``datetime`` or ISO 8601 text, UTC when it has no zone;
    * a date without a time of day (a ``datetime.date``, text such as
      ``2024-05-01`` or ``20240501``, or the int ``20240501``), which is
      noon UTC (``DATE_ONLY_TIME``), so it keeps its date in U.S. zones;
    * any other number, or number as text, as pydantic reads it: Unix
      seconds, or milliseconds above 2e10. A number that gives a time before
      1973-03-03 (``EARLIEST_UNIX_TIME``) is rejected. Every 8-digit number
      falls below that time as seconds, so reading 8 digits as a date loses
      no plausible Unix time.

    A time before 1900-01-01 UTC is rejected, and so is one from
    9000-01-01 UTC on (``LATEST_TIMESTAMP``). Without a timestamp, a
    transaction gets the current time, which suits publishing purchases as
    they happen, but not validating a record of a past purchase.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    transaction_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
    user_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
    merchant: Annotated[str, Field(min_length=1, max_length=MAX_MERCHANT_LENGTH)]
    category: Annotated[str, Field(max_length=MAX_CATEGORY_LENGTH)] = ""
    amount_usd: Decimal
    mcc: str | None = None
    timestamp: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    currency: Annotated[str, StringConstraints(min_length=3, max_length=3, to_upper=True)] = "USD"
    merchant_country: Annotated[str, StringConstraints(min_length=2, max_length=2, to_upper=True)] | None = None
    card_used: Annotated[str, Field(max_length=MAX_CATEGORY_LENGTH)] | None = None
    original_amount: Decimal | None = None
    original_currency: Annotated[str, Field(min_length=3, max_length=3)] | None = None
    usd_per_unit: Decimal | None = None
    rate_date: date | None = None

    @field_validator("amount_usd", mode="before")
    @classmethod
    def _parse_amount(cls, value: object) -> Decimal:
        text = _amount_text(value)
        message_value = repr(value) if isinstance(value, str) else text  # a number as written, whatever its type
        try:
            amount = Decimal(text)
        except (InvalidOperation, ValueError):
            raise ValueError(f"amount_usd {message_value} is not a number; write it like 12.50") from None
        if not amount.is_finite():
            raise ValueError(f"amount_usd {message_value} is not a finite number; write it like 12.50")
        if amount <= 0:
            raise ValueError(
                f"amount_usd {message_value} is not a purchase; refunds and credits "
                "are recorded and skipped, not recommended"
            )
        if amount > MAX_AMOUNT_USD:
            raise ValueError(f"amount_usd {message_value} is above the limit of ${MAX_AMOUNT_USD:,} per purchase; "
                             "check the amount column and its decimal point")
        rounded = to_cents(amount)
        if not rounded:
            raise ValueError(f"amount_usd {message_value} rounds to $0.00, which is not a purchase; "
                             "check the amount column and its decimal point")
        return rounded

    @field_validator("mcc", mode="before")
    @classmethod
    def _parse_mcc(cls, value: object) -> str | None:
        if type(value) is str and len(value) == 4 and value.isascii() and value.isdigit():
            return value  # already a 4-digit code, as every published entry has it
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError(f"mcc {value!r} is a boolean, not a merchant category code; "
                             "write the 4-digit code like 5411, or leave it empty")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = str(value).strip()
        if text.endswith(".0") and text[:-2].isdigit():
            text = text[:-2]  # a spreadsheet turned 5411 into 5411.0
        if not text:
            return None
        if not _MCC_PATTERN.match(text):
            raise ValueError(
                f"mcc {value!r} is not a 4-digit ISO 18245 merchant category code; "
                "write it like 5411, or leave it empty"
            )
        return text.zfill(4)  # restore a leading zero a spreadsheet dropped: 742 -> 0742

    @field_validator("timestamp", mode="before")
    @classmethod
    def _parse_timestamp(cls, value: object) -> object:
        # The rules are in the class docstring. A date without a time of day is
        # noon UTC (DATE_ONLY_TIME), so it keeps its calendar date in U.S. zones.
        value = _plain_number(value)
        if isinstance(value, str):
            text = value.strip()
            if len(text) == 8 and text.isascii() and text.isdigit():
                return _compact_date(value)
            if len(text) == 10:
                try:
                    return datetime.combine(date.fromisoformat(text), DATE_ONLY_TIME)
                except ValueError:
                    pass  # such as "-123456789", Unix time before 1970
            if _UNIX_TIME_TEXT.match(text):
                return _unix_time(value)
            return value
        if type(value) is int and 10_000_000 <= value <= 99_999_999:
            return _compact_date(value)
        if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
            return _unix_time(value)
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime.combine(value, DATE_ONLY_TIME)
        return value

    @field_validator("timestamp", mode="after")
    @classmethod
    def _timestamp_in_utc(cls, value: datetime) -> datetime:
        try:
            moment = _utc(value)
        except OverflowError:  # year 1 or 9999 moved across the date line
            raise ValueError(f"timestamp {value.isoformat()} is out of the supported date range; "
                             "write a date from 1900-01-01 to 8999-12-31") from None
        if moment < EARLIEST_TIMESTAMP:
            raise ValueError(f"timestamp {value.isoformat()} is before 1900-01-01T00:00:00Z, "
                             f"earlier than any card purchase; {EARLIEST_TIMESTAMP_FIX}")
        if moment >= LATEST_TIMESTAMP:
            # Written with str(), not isoformat, because the readers' row errors
            # look for the value in that form (producer.layouts.validate_transaction).
            raise ValueError(f"timestamp {value} is on or after 9000-01-01 00:00:00 UTC, "
                             f"too far ahead for any card purchase; {LATEST_TIMESTAMP_FIX}")
        return moment


class CardRef(BaseModel):
    """A card of the catalog, as a recommendation names it."""

    card_id: str
    name: str
    issuer: str


class Rewards(BaseModel):
    """What one card earns on one purchase.

    ``amount`` is in ``unit`` (points, miles, or USD for cash back);
    ``cash_value_usd`` is that amount at the program's valuation, net of any
    foreign transaction fee; ``effective_rate`` is cash value over the amount.
    """

    amount: Decimal
    unit: str
    program: str
    cash_value_usd: Decimal
    effective_rate: Decimal


class Alternative(BaseModel):
    """A card the engine ranked below the recommended one."""

    card: CardRef
    rewards: Rewards
    note: str = ""


class Recommendation(BaseModel):
    """The best card for one transaction, with the reason and the runners-up.

    ``passed_over`` names the cards left out or held back at this merchant
    and why. ``spend_updates`` is the (cap-state hash field, cents) pairs the
    purchase adds, filled only when the engine ran with a spend state.
    ``timestamp``, ``card_used`` and ``merchant`` are copied from the
    transaction, so a subscriber can show the purchase without looking it up.
    """

    model_config = ConfigDict(protected_namespaces=())

    transaction_id: str
    user_id: str
    recommended_card: CardRef
    rewards: Rewards
    alternatives: Annotated[list[Alternative], Field(max_length=3)] = []
    reasoning: str
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]
    category: str
    wallet_source: WalletSource
    amount_usd: Decimal
    processing_time_ms: float = 0.0
    engine_version: str
    catalog_version: str
    entry_id: str | None = None
    run: str = "live"
    recommender: str = "in-process"
    published_at: datetime | None = None
    completed_at: datetime | None = None
    passed_over: list[str] = []
    spend_updates: list[tuple[str, int]] = []
    timestamp: datetime | None = None
    card_used: str | None = None
    merchant: str | None = None

    @property
    def cash_value_usd(self) -> Decimal:
        """The recommended card's cash value on this purchase (``rewards.cash_value_usd``)."""
        return self.rewards.cash_value_usd


class DeadLetter(BaseModel):
    """An entry set aside because it can never succeed, with what is known of why."""

    entry_id: str
    stream: str
    payload: dict[str, str]
    reason: str
    error_type: str
    error: str
    http_status: int | None = None
    attempts: int = 0
    consumer: str = ""
    first_failure_at: datetime
    last_failure_at: datetime
    transaction_id: str | None = None
    # The run whose consumer wrote the letter: "live" or a replay's run name. Letters
    # stored before runs were recorded read as "live", even those a replay wrote.
    run: str = "live"
