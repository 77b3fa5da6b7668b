"""Parsers for the amount and date text found in card and bank exports.

Each parser raises ``InvalidValueError``, a ``ValueError`` whose reason and
fix (the accepted formats) are kept apart. The readers turn that into a
``RowError`` naming the line and column.
"""

from __future__ import annotations

import calendar
import enum
import functools
import re
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Callable

from producer.countries import COUNTRY_CODES
from producer.errors import InvalidValueError
from rewardpilot.models import (
    DATE_ONLY_TIME, EARLIEST_TIMESTAMP, EARLIEST_TIMESTAMP_FIX, LATEST_TIMESTAMP, LATEST_TIMESTAMP_FIX,
)
from rewardpilot.money import CENT

# An amount as banks write it: an optional sign, an optional "$", digits with
# or without thousands separators, and an optional decimal part. Parentheses
# mark a negative amount in accounting exports: "(45.00)" is -45.00.
_AMOUNT = re.compile(
    r"""^
    (?P<sign>[+-]?)\s*
    \$?\s*
    (?P<inner_sign>[+-]?)
    (?P<digits>\d{1,3}(?:,\d{3})+|\d+)?
    (?P<fraction>\.\d+)?
    $""",
    re.VERBOSE | re.ASCII,
)


AMOUNT_EXAMPLES = "write it like 12.50, 1,234.56, $12.50, -12.50 or (12.50)"

# An amount in exponent notation, such as "1e3" or "-$1.5E+2". None of the bank
# exports read here writes one, so it is rejected, with the plain number in the fix.
_EXPONENT_AMOUNT = re.compile(
    r"""^
    (?P<sign>[+-]?)\s*
    \$?\s*
    (?P<inner_sign>[+-]?)
    (?P<mantissa>\d+(?:\.\d*)?|\.\d+)
    [eE](?P<exponent>[+-]?\d+)
    $""",
    re.VERBOSE | re.ASCII,
)
# Exponents up to this size get the exact plain number in the fix. Larger
# ones get a fixed example, so the message stays short.
_MAX_EXAMPLE_EXPONENT = 12

EMPTY_VALUE_FIX = "fill it in"

# Transaction fields that contain a code of a fixed number of letters: (letters, what the code is, examples).
CODE_FIELDS = {
    "currency": (3, "ISO 4217 currency code", "EUR or USD"),
    "merchant_country": (2, "ISO 3166-1 alpha-2 country code", "US or GB"),
}
_LETTER_COUNTS = {2: "two", 3: "three"}

# Layouts of dates and times that ``parse_timestamp`` accepts besides ISO 8601,
# as strptime formats. US exports write dates month first.
US_DATE_FORMATS = (
    "%m/%d/%Y",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m-%d-%Y",
)

TIMESTAMP_EXAMPLES = (
    "ISO 8601 such as 2024-05-01T12:30:00Z, 2024-05-01 12:30:00 or 2024-05-01, "
    "or a US date such as 05/01/2024 or 05/01/2024 12:30"
)

_TIME_CODES = ("%H", "%I", "%M", "%S", "%p", "%X", "%c", "%T", "%R")


def format_amount(amount: Decimal) -> str:
    """Write an amount with two decimals, as money is written elsewhere (``500.00``).

    An amount with more decimals keeps them all, so a sub-cent refund such as
    0.004 does not read as 0.00.
    """
    normalized = amount.normalize()
    if normalized.as_tuple().exponent >= -2 and normalized.adjusted() < 20:
        return str(amount.quantize(CENT))
    # More decimals, or too many digits for quantize in the default 28-digit context.
    return format(normalized, "f")


def parse_amount(text: str) -> Decimal:
    """Parse an amount as exports write it into a signed ``Decimal``.

    Accepts "12.50", "1,234.56", "$1,234.56", "-$5", "$-99.00", "+ $73.01"
    and "(45.00)" (negative). Raises ``InvalidValueError`` for anything else,
    including an empty value, exponents, NaN and a decimal comma such as "12,50".
    """
    value = text.strip()
    if not value:
        raise InvalidValueError("the amount is empty", EMPTY_VALUE_FIX)
    # The common case, ASCII digits with an optional decimal part, which
    # ``Decimal`` reads exactly as the full pattern would. With these string
    # tests in place of a regular expression match, a plain amount is parsed
    # in about a quarter less time (timeit, CPython 3.11).
    whole, point, fraction = value.partition(".")
    if whole.isdigit() and (fraction.isdigit() or not point) and value.isascii():
        return Decimal(value)

    negative = False
    if value.startswith("(") and value.endswith(")"):
        negative = True
        value = value[1:-1].strip()

    match = _AMOUNT.match(value)
    if match is None or not (match["digits"] or match["fraction"]):
        exponent = _EXPONENT_AMOUNT.match(value)
        if exponent is not None:
            raise InvalidValueError(f"{text!r} uses exponent notation, which is not accepted",
                                    f"write the amount as a plain number like {_plain_amount(exponent, negative)}")
        raise InvalidValueError(f"{text!r} is not an amount", AMOUNT_EXAMPLES)
    if match["sign"] and match["inner_sign"]:
        raise InvalidValueError(f"{text!r} has two signs", AMOUNT_EXAMPLES)
    if negative and (match["sign"] or match["inner_sign"]):
        raise InvalidValueError(f"{text!r} has both parentheses and a sign", AMOUNT_EXAMPLES)

    number = (match["digits"] or "0").replace(",", "") + (match["fraction"] or "")
    try:
        amount = Decimal(number)
    except InvalidOperation:  # NOTE: the pattern admits only digits, so this is a guard
        raise InvalidValueError(f"{text!r} is not an amount", AMOUNT_EXAMPLES) from None

    if negative or "-" in (match["sign"], match["inner_sign"]):
        amount = -amount
    return amount


def check_code(field: str, text: str, name: str | None = None) -> None:
    """Raise ``InvalidValueError`` when the currency or country code ``text`` of ``field`` is not letters of its length.

    ``field`` is a key of ``CODE_FIELDS``, and ``name`` is how the reason
    names the value, ``field`` when not given. Case and surrounding spaces
    are allowed, because ``Transaction`` strips the value and makes it upper
    case. Whether a code of the right form names a real currency or country
    is not checked here.
    """
    letters, kind, examples = CODE_FIELDS[field]
    name = name or field
    value = text.strip()
    if not value:
        raise InvalidValueError(f"{name} is empty", EMPTY_VALUE_FIX)
    if len(value) == letters and value.isascii() and value.isalpha():
        return
    count = _LETTER_COUNTS[letters]
    country_code = COUNTRY_CODES.get(value.casefold()) if field == "merchant_country" else None
    if country_code is not None:
        raise InvalidValueError(f"{name} {text!r} is a country name, not a {count}-letter {kind}",
                                f"write {country_code}, the {kind} of {value}")
    raise InvalidValueError(f"{name} {text!r} is not a {count}-letter {kind}",
                            f"use a {count}-letter {kind} such as {examples}")


def _plain_amount(match: re.Match, negative: bool) -> str:
    """Return the amount of an exponent-notation match as a plain number with at least two decimals, like 1000.00."""
    digits = match["exponent"].lstrip("+-").lstrip("0") or "0"
    if len(digits) > 2 or int(digits) > _MAX_EXAMPLE_EXPONENT:
        return "1000.00"
    number = Decimal(f"{match['mantissa']}e{match['exponent']}")
    whole, _, fraction = format(number, "f").partition(".")
    sign = "-" if negative or "-" in (match["sign"], match["inner_sign"]) else ""
    return f"{sign}{whole}.{fraction.ljust(2, '0')}"


def parse_timestamp(
    text: str, *, formats: tuple[str, ...], zone: tzinfo, order_fix: Callable[[str], str] | None = None,
) -> tuple[datetime, bool]:
    """Parse a date or date-time into an aware UTC ``datetime``.

    ``formats`` are strptime formats tried in order; the name ``"iso"`` means
    ISO 8601 as ``datetime.fromisoformat`` reads it (Python 3.11 accepts "Z").
    A value without a zone is read in ``zone``. A date without a time of day
    is taken as noon (``DATE_ONLY_TIME``), which stays on the same calendar
    date in every zone within 11 hours of ``zone``, so cap periods, quarters
    and monthly reports see the date the bank printed. Returns the time and
    whether it carried a zone of its own. Raises ``InvalidValueError``, which
    names the field out of range for a date or time that does not exist, and
    otherwise lists the accepted formats in its fix. For a month above 12 in a
    month-first format, the fix also says how to read day-first dates:
    ``order_fix`` of the format, ``day_month_order_fix`` when not given.
    A time before ``EARLIEST_TIMESTAMP`` (1900-01-01 UTC) or from
    ``LATEST_TIMESTAMP`` (9000-01-01 UTC) on raises ``InvalidValueError``
    too, as ``Transaction`` would reject it.
    """
    value = text.strip()
    if not value:
        raise InvalidValueError("the timestamp is empty", EMPTY_VALUE_FIX)
    if value.endswith("z"):
        # RFC 3339 (section 5.6) allows a lower-case "z" for UTC, which
        # datetime.fromisoformat rejects in Python 3.11. A lower-case "t" it reads.
        value = value[:-1] + "Z"
    if formats and formats[0] == "iso" and "T" in value:
        # The layout the product writes, 2024-05-01T12:30:00Z: a time of day
        # already in UTC, so the loop below would return the parsed value as is.
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is timezone.utc:
                return _in_range(parsed, text), True
    for layout in formats:
        try:
            if layout == "iso":
                parsed = datetime.fromisoformat(value)
            else:
                parsed = datetime.strptime(value, layout)
        except ValueError:
            continue
        if not _has_time_of_day(layout, value):
            parsed = parsed.replace(hour=DATE_ONLY_TIME.hour)
        had_zone = parsed.tzinfo is not None
        if not had_zone:
            parsed = parsed.replace(tzinfo=zone)
        try:
            moment = parsed.astimezone(timezone.utc)
        except OverflowError:  # year 1 or 9999 moved across the date line
            raise InvalidValueError(f"{text!r} is out of the supported date range",
                                    "write a date from 1900-01-01 up to, not including, 9000-01-01") from None
        return _in_range(moment, text), had_zone
    out_of_range = _out_of_range_error(text, value, formats, order_fix or day_month_order_fix)
    if out_of_range is not None:
        raise out_of_range
    raise InvalidValueError(f"{text!r} is not a date in an accepted format", f"write it as {describe_formats(formats)}")


def _in_range(moment: datetime, text: str) -> datetime:
    """Return ``moment``, a UTC time parsed from ``text``; raise ``InvalidValueError`` before 1900 or from 9000 on."""
    if moment < EARLIEST_TIMESTAMP:
        raise InvalidValueError(f"{text!r} is before 1900-01-01 (UTC), earlier than any card purchase",
                                EARLIEST_TIMESTAMP_FIX)
    if moment >= LATEST_TIMESTAMP:
        raise InvalidValueError(f"{text!r} is on or after 9000-01-01 (UTC), too far ahead for any card purchase",
                                LATEST_TIMESTAMP_FIX)
    return moment


# The shape of the ISO 8601 values ``datetime.fromisoformat`` reads (Python
# 3.11), with every field a run of digits, so a value whose fields are out of
# range still matches. Basic (20240501T123000) and extended (2024-05-01T12:30:00)
# forms are each matched whole, through the backreferences.
_ISO_SHAPE = re.compile(
    r"""
    (?P<year>\d{4})(?P<dash>-?)(?P<month>\d{2})(?P=dash)(?P<day>\d{2})
    (?:
        [T\ ](?P<hour>\d{2})
        (?:(?P<colon>:?)(?P<minute>\d{2})(?:(?P=colon)(?P<second>\d{2})(?:[.,]\d+)?)?)?
        (?P<offset>Z|[+-]\d{2}(?::?\d{2})?)?
    )?
    """,
    re.VERBOSE | re.ASCII | re.IGNORECASE,
)

# The regular expression each strptime code is matched with when a value is
# checked for fields out of range. Numbers take any value of their width.
_SHAPE_CODES = {
    "Y": r"(?P<year>\d{4})",
    "y": r"(?P<short_year>\d{2})",
    "m": r"(?P<month>\d{1,2})",
    "d": r"(?P<day>\d{1,2})",
    "H": r"(?P<hour>\d{1,2})",
    "I": r"(?P<clock_hour>\d{1,2})",
    "M": r"(?P<minute>\d{1,2})",
    "S": r"(?P<second>\d{1,2})",
    "f": r"\d{1,6}",
    "p": r"(?:am|pm)",
    "a": r"[a-z]+",
    "A": r"[a-z]+",
    "b": r"(?P<month_name>[a-z]+)",
    "B": r"(?P<month_name>[a-z]+)",
    "z": r"(?P<offset>z|[+-]\d{2}(?::?\d{2})?)",
    "Z": r"[a-z]+",
    "%": "%",
}

# English month names, because the messages are in English whatever the locale.
_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July",
                "August", "September", "October", "November", "December")


@functools.cache
def _shape_pattern(layout: str) -> re.Pattern | None:
    """Compile the shape of a strptime format, or return None for a format it cannot express.

    Formats with a code missing from ``_SHAPE_CODES``, or with the same
    field twice, get None, and their values are not checked for range.
    """
    parts = []
    for index, piece in enumerate(re.split(r"(%.)", layout)):
        if index % 2 == 0:  # literal text between codes
            parts.extend(r"\s+" if char.isspace() else re.escape(char) for char in piece)
            continue
        shape = _SHAPE_CODES.get(piece[1])
        if shape is None:
            return None
        parts.append(shape)
    try:
        return re.compile("".join(parts), re.ASCII | re.IGNORECASE)
    except re.error:  # a field named twice, such as two %d
        return None


def _shape_fields(value: str, layout: str) -> dict[str, int | str] | None:
    """Return the date and time fields of ``value`` read in the shape of ``layout``, or None when it does not fit."""
    pattern = _ISO_SHAPE if layout == "iso" else _shape_pattern(layout)
    match = pattern.fullmatch(value) if pattern is not None else None
    if match is None:
        return None

    groups = {name: text for name, text in match.groupdict().items() if text is not None}
    numbers = ("year", "month", "day", "hour", "clock_hour", "minute", "second")
    fields: dict[str, int | str] = {name: int(groups[name]) for name in numbers if name in groups}
    if "short_year" in groups:
        # strptime reads %y values 69 to 99 as 1969 to 1999 and 00 to 68 as 2000 to 2068.
        short_year = int(groups["short_year"])
        fields["year"] = short_year + (1900 if short_year >= 69 else 2000)
    if "month_name" in groups:
        names = [name.casefold() for name in _MONTH_NAMES]
        name = groups["month_name"].casefold()
        matches = [number for number, full in enumerate(names, start=1) if name in (full, full[:3])]
        if not matches:
            return None
        fields["month"] = matches[0]
    if "offset" in groups and groups["offset"].upper() != "Z":
        fields["offset"] = groups["offset"]
    return fields


def _out_of_range_error(
    text: str, value: str, formats: tuple[str, ...], order_fix: Callable[[str], str],
) -> InvalidValueError | None:
    """Return the error for a value in an accepted format whose date or time does not exist.

    Such a value, like 2026-02-30 or 2026-02-03T25:00:00Z, is written in the
    right format, so the error names the field that is out of range in place
    of listing the formats. Returns None when the value fits no format.
    """
    for layout in formats:
        fields = _shape_fields(value, layout)
        if fields is None:
            continue
        error = _date_range_error(text, fields, layout, order_fix) or _time_range_error(text, fields)
        if error is not None:
            return error
    return None


def date_fields_error(text: str, fields: dict[str, int]) -> InvalidValueError | None:
    """Return the error for a date or time whose numeric fields are out of range, or None when they are real.

    ``fields`` contains any of year, month, day, hour, minute and second, as
    read from ``text`` by a parser of a fixed-width format such as OFX's.
    The reason names the field, such as "February 2026 has 28 days", and the
    fix names the part to check.
    """
    return _date_range_error(text, fields, "iso", day_month_order_fix) or _time_range_error(text, fields)


def _date_range_error(
    text: str, fields: dict, layout: str, order_fix: Callable[[str], str],
) -> InvalidValueError | None:
    year = fields.get("year")
    month = fields.get("month")
    day = fields.get("day")
    if year == 0:
        return InvalidValueError(f"{text!r} is not a real date (there is no year 0)", EARLIEST_TIMESTAMP_FIX)
    if month is not None and not 1 <= month <= 12:
        fix = "check the day and month"
        if is_day_month_format(layout) and day is not None and _is_real_date(year, day, month):
            first, other = _order_names(layout)
            fix += (f". The format {format_pattern(layout)} puts the {first} first, so for a file that puts "
                    f"the {other} first, {order_fix(layout)}")
        return InvalidValueError(f"{text!r} is not a real date (month {month} is out of range, "
                                 "months run from 1 to 12)", fix)
    if month is None or day is None:
        return None

    # Without a year, the day is checked against a leap year, so February 29 passes here.
    days = calendar.monthrange(year if year is not None else 2000, month)[1]
    month_name = _MONTH_NAMES[month - 1] if year is None else f"{_MONTH_NAMES[month - 1]} {year}"
    if day == 0:
        return InvalidValueError(f"{text!r} is not a real date (there is no day 0, days run from 1 to {days} "
                                 f"in {month_name})", "check the day and month")
    if day > days:
        return InvalidValueError(f"{text!r} is not a real date ({month_name} has {days} days)",
                                 "check the day and month")
    return None


def _time_range_error(text: str, fields: dict) -> InvalidValueError | None:
    hour = fields.get("hour")
    clock_hour = fields.get("clock_hour")
    minute = fields.get("minute")
    second = fields.get("second")
    reason = None
    fix = "check the time of day"
    if hour is not None and hour > 23:
        reason = f"hour {hour} is out of range, hours run from 0 to 23"
        if hour == 24 and not minute and not second:
            fix = "write midnight at the end of a day as 00:00 on the next day"
    elif clock_hour is not None and not 1 <= clock_hour <= 12:
        reason = f"hour {clock_hour} is out of range for a 12-hour clock with AM or PM, hours run from 1 to 12"
    elif minute is not None and minute > 59:
        reason = f"minute {minute} is out of range, minutes run from 0 to 59"
    elif second is not None and second > 59:
        reason = f"second {second} is out of range, seconds run from 0 to 59 and leap seconds are not accepted"
    if reason is not None:
        return InvalidValueError(f"{text!r} is not a real time of day ({reason})", fix)

    offset = fields.get("offset")
    if offset is not None:
        digits = offset[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        if hours > 23 or minutes > 59:
            return InvalidValueError(
                f"{text!r} has a time zone offset out of range ({offset}, offsets run from -23:59 to +23:59)",
                "check the time zone offset",
            )
    return None


def _has_time_of_day(layout: str, value: str) -> bool:
    if layout == "iso":
        return "T" in value or " " in value or ":" in value
    return _layout_has_time(layout)


@functools.cache
def _layout_has_time(layout: str) -> bool:
    return any(code in layout for code in _TIME_CODES)


def describe_formats(formats: tuple[str, ...]) -> str:
    """Return the accepted layouts as readers write them, for error messages."""
    names = []
    for layout in formats:
        if layout == "iso":
            names.append("ISO 8601 (2024-05-01T12:30:00Z, 2024-05-01 12:30:00, 2024-05-01)")
        else:
            example = datetime(2024, 5, 1, 12, 30, 0).strftime(layout)
            names.append(f"{format_pattern(layout)} ({example})")
    return " or ".join(names)


def format_pattern(layout: str) -> str:
    """Return a strptime format as people write date patterns, such as MM/DD/YYYY for %m/%d/%Y."""
    pattern = layout
    for code, text in (("%Y", "YYYY"), ("%m", "MM"), ("%d", "DD"), ("%H", "hh"), ("%M", "mm"), ("%S", "ss")):
        pattern = pattern.replace(code, text)
    return pattern


# A format that writes the day and the month as numbers, such as %m/%d/%Y,
# reads 03/04/2026 without an error in either order. So a file written in the
# reverse order of its layout is read with day and month swapped whenever the
# day is 12 or less. The names below find such formats and read a date in both
# orders, so a reader can tell which order a file uses.


def is_day_month_format(layout: str) -> bool:
    """Return whether a strptime format writes the day and the month as numbers, with no year before them.

    ISO 8601 and formats with a month name (%b, %B) cannot be read in the
    reverse order. A format that starts with the year, such as %Y-%m-%d, is
    taken to be in the ISO 8601 order, year, month, day.
    """
    if layout == "iso" or "%d" not in layout or "%m" not in layout:
        return False
    first_field = min(layout.find("%d"), layout.find("%m"))
    if any(0 <= layout.find(code) < first_field for code in ("%Y", "%y")):
        return False
    return _shape_pattern(layout) is not None


def swap_day_month(layout: str) -> str:
    """Return ``layout`` with its %d and %m codes swapped, such as %d/%m/%Y for %m/%d/%Y."""
    return layout.replace("%m", "\0").replace("%d", "%m").replace("\0", "%d")


def day_month_order_fix(layout: str) -> str:
    """Return the fix for dates written in the reverse day and month order of ``layout``: the layout file to pass."""
    return (f"pass --layout with a layout file whose timestamp_formats is [\"{swap_day_month(layout)}\"] "
            "(see \"A layout of your own\" in docs/input-formats.md)")


def _order_names(layout: str) -> tuple[str, str]:
    """Return ("month", "day") for a format that puts the month before the day, else ("day", "month")."""
    return ("month", "day") if layout.find("%m") < layout.find("%d") else ("day", "month")


def _is_real_date(year: int | None, month: int, day: int) -> bool:
    # Without a year, the day is checked against a leap year, as _date_range_error does.
    if not 1 <= month <= 12 or day < 1:
        return False
    return day <= calendar.monthrange(2000 if year is None else year, month)[1]


class DateReading(enum.Enum):
    """The order, the layout's or the reverse, in which a date with a numeric day and month is a real date."""

    LAYOUT_ORDER_ONLY = "layout order only"  # 03/25/2026 read month first: there is no month 25
    OTHER_ORDER_ONLY = "other order only"  # 25/03/2026 read month first: it is a real date only day first
    EITHER_ORDER = "either order"  # 03/04/2026: a different real date in each order


@dataclass(frozen=True)
class DateFit:
    """A date read in the shape of one of a layout's day-and-month formats."""

    layout: str  # the strptime format whose shape the date fits
    day: int  # the day and month as read in that format, so month is above 12 for OTHER_ORDER_ONLY
    month: int
    # None when the order makes no difference (05/05/2026) or neither order gives a real date.
    reading: DateReading | None


@dataclass(frozen=True)
class DayMonthOrder:
    """The day and month order that a layout's numeric date formats share."""

    formats: tuple[str, ...]  # the layout's formats for which is_day_month_format is true
    other_formats: tuple[str, ...]  # the rest of the layout's formats, such as "iso"
    month_first: bool

    @property
    def first(self) -> str:
        """The field the layout reads first: "month" or "day"."""
        return "month" if self.month_first else "day"

    @property
    def other(self) -> str:
        """The field a file in the reverse order writes first."""
        return "day" if self.month_first else "month"

    def read(self, text: str) -> DateFit | None:
        """Read ``text`` in the shape of the first day-and-month format it fits, or return None when it fits none."""
        value = text.strip()
        for layout in self.formats:
            fields = _shape_fields(value, layout)
            if fields is None:
                continue
            year, day, month = fields.get("year"), fields["day"], fields["month"]
            in_order = _is_real_date(year, month, day)
            reversed_order = _is_real_date(year, day, month)
            reading = None
            if in_order and not reversed_order:
                reading = DateReading.LAYOUT_ORDER_ONLY
            elif reversed_order and not in_order:
                reading = DateReading.OTHER_ORDER_ONLY
            elif in_order and day != month:
                reading = DateReading.EITHER_ORDER
            return DateFit(layout, day, month, reading)
        return None

    def fits_other_format(self, text: str) -> bool:
        """Return whether ``text`` is written in one of ``other_formats``, such as ISO 8601, even as an invalid date.

        The shape decides, so a first date of 2026-02-30 settles the file as
        ISO 8601 as 2026-02-28 does, and is rejected on its own row.
        """
        if not self.other_formats:
            return False
        try:
            parse_timestamp(text, formats=self.other_formats, zone=timezone.utc)
        except ValueError:
            value = text.strip()
            return any(_shape_fields(value, layout) is not None for layout in self.other_formats)
        return True


@functools.cache
def day_month_order(formats: tuple[str, ...]) -> DayMonthOrder | None:
    """Return the day and month order of a layout's ``timestamp_formats``, or None when no order applies.

    None means no format writes the day and the month as numbers
    (``is_day_month_format``), or the formats disagree on the order. In that
    second case strptime takes the first format that fits, and a file with
    dates in both orders is read as the layout's author chose.
    """
    numeric = tuple(layout for layout in formats if is_day_month_format(layout))
    if not numeric:
        return None
    orders = {layout.find("%m") < layout.find("%d") for layout in numeric}
    if len(orders) > 1:
        return None
    other = tuple(layout for layout in formats if layout not in numeric)
    return DayMonthOrder(numeric, other, orders.pop())
