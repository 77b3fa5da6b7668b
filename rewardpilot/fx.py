"""Conversion of amounts in other currencies to US dollars, with rates the user supplies.

Readers put a statement's own amount in ``amount_usd`` and its currency in
``currency`` (an ANZ card statement is in AUD). Before such a transaction is
published, ``CurrencyConverter.convert`` multiplies the amount by a rate in
USD per unit and rounds it to cents half-even (``money.round_cash``). The
amount, currency and rate it started from go into ``original_amount``,
``original_currency``, ``usd_per_unit`` and ``rate_date``. ``currency``
keeps the purchase's currency, so the engine still charges the foreign
transaction fee.

The rates file is CSV with the header ``currency,usd_per_unit`` or
``currency,usd_per_unit,date``. A currency has either one undated rate, used
on every date, or dated rates, of which the latest on or before the
transaction's date (its UTC date) applies.

A non-USD transaction without an applicable rate raises
``MissingRateError``, unless the converter was built with
``unconverted="keep"``, which passes it on unchanged (its amount then counts
as dollars, as before conversion existed).
"""

from __future__ import annotations

import csv
import io
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Literal

from rewardpilot.models import MAX_AMOUNT_USD, Transaction
from rewardpilot.money import round_cash

UnconvertedPolicy = Literal["reject", "keep"]
UNCONVERTED_POLICIES: tuple[str, ...] = ("reject", "keep")

RATES_HEADER = ("currency", "usd_per_unit", "date")
RATES_EXAMPLE = "currency,usd_per_unit,date\nAUD,0.6612,2017-05-01"

_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
_RATE = re.compile(r"^\d+(\.\d+)?$")


class RatesFileError(ValueError):
    """A rates file that cannot be used, with the file, line, value and fix in the message."""


class ConversionError(ValueError):
    """A transaction that cannot be converted: ``reason``, the ``value`` at fault and the ``fix``."""

    def __init__(self, reason: str, *, value: object, fix: str) -> None:
        self.reason = reason
        self.value = value
        self.fix = fix
        super().__init__(f"{reason}; {fix}")


class MissingRateError(ConversionError):
    """A non-USD transaction with no applicable rate."""


@dataclass(frozen=True)
class Rate:
    """One row of a rates file: USD per unit of ``currency``, on and after ``day`` (None: every day)."""

    currency: str
    usd_per_unit: Decimal
    day: date | None
    line: int


@dataclass
class FxRates:
    """Exchange rates by currency, each list sorted by date."""

    source: str = ""
    _by_currency: dict[str, list[Rate]] = field(default_factory=dict)
    _days: dict[str, list[date]] = field(default_factory=dict)

    @classmethod
    def from_rates(cls, rates: Iterable[Rate], source: str = "") -> FxRates:
        """Build the table; raise ``RatesFileError`` for a repeated date or a currency both dated and undated."""
        table = cls(source=source)
        for rate in rates:
            table._add(rate)
        for currency, entries in table._by_currency.items():
            entries.sort(key=lambda rate: rate.day or date.min)
            table._days[currency] = [rate.day or date.min for rate in entries]
        return table

    def _add(self, rate: Rate) -> None:
        entries = self._by_currency.setdefault(rate.currency, [])
        for earlier in entries:
            if earlier.day == rate.day:
                when = f"for {rate.day.isoformat()}" if rate.day else "without a date"
                raise RatesFileError(
                    f"{self._where(rate.line)}: {rate.currency} has a second rate {when} "
                    f"(the first is on line {earlier.line}); keep one of them"
                )
            if (earlier.day is None) != (rate.day is None):
                raise RatesFileError(
                    f"{self._where(rate.line)}: {rate.currency} has both dated and undated rates "
                    f"(see line {earlier.line}); give every {rate.currency} row a date, or keep one undated row"
                )
        entries.append(rate)

    def _where(self, line: int) -> str:
        return f"rates file {self.source!r}, line {line}" if self.source else f"rates file, line {line}"

    @property
    def currencies(self) -> list[str]:
        return sorted(self._by_currency)

    def rate_for(self, currency: str, day: date) -> Rate | None:
        """Return the undated rate, or the latest dated rate on or before ``day``; None when there is none."""
        entries = self._by_currency.get(currency)
        if not entries:
            return None
        index = bisect_right(self._days[currency], day)
        return entries[index - 1] if index else None

    def first_day(self, currency: str) -> date | None:
        """Return the date of the earliest rate for ``currency``, None when it has none or is undated."""
        entries = self._by_currency.get(currency)
        return entries[0].day if entries else None


def load_rates(path: str | Path) -> FxRates:
    """Read a rates file; raise ``RatesFileError`` naming the line, value and fix for bad content."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise RatesFileError(f"cannot read rates file {str(path)!r}: {error}") from None
    return parse_rates(text, source=str(path))


def parse_rates(text: str, source: str = "") -> FxRates:
    """Parse the text of a rates file (see the module docstring for the layout)."""
    where = f"rates file {source!r}" if source else "rates file"
    rows = [(number, row) for number, row in enumerate(csv.reader(io.StringIO(text)), start=1)
            if any(cell.strip() for cell in row)]
    if not rows:
        raise RatesFileError(f"{where} is empty; write a header and one row per rate, like:\n{RATES_EXAMPLE}")

    header_line, header = rows[0]
    names = [cell.strip().casefold() for cell in header]
    if names not in (list(RATES_HEADER[:2]), list(RATES_HEADER)):
        raise RatesFileError(
            f"{where}, line {header_line}: the header is {','.join(header)!r}, but it must be "
            f"'currency,usd_per_unit' or 'currency,usd_per_unit,date'; for example:\n{RATES_EXAMPLE}"
        )

    rates = []
    for number, row in rows[1:]:
        rate = _parse_row(row, len(names), number, where)
        if rate is not None:
            rates.append(rate)
    if not rates:
        raise RatesFileError(f"{where} has a header but no rates; add one row per rate, like:\n{RATES_EXAMPLE}")
    return FxRates.from_rates(rates, source)


def _parse_row(row: list[str], width: int, line: int, where: str) -> Rate | None:
    """Return the rate on one row, or None for a USD row with rate 1 (USD is never converted)."""
    cells = [cell.strip() for cell in row]
    if width == 3 and len(cells) == 2:
        cells.append("")  # an undated rate in a file with a date column: AUD,0.8 reads as AUD,0.8,
    if len(cells) != width:
        raise RatesFileError(
            f"{where}, line {line}: the row has {len(cells)} fields but the header has {width}; "
            f"write it like {RATES_EXAMPLE.splitlines()[1]!r}"
        )

    currency = cells[0]
    if not _CURRENCY.match(currency):
        raise RatesFileError(
            f"{where}, line {line}: currency {currency!r} is not a 3-letter ISO 4217 code; write it like AUD or EUR"
        )
    currency = currency.upper()

    text = cells[1]
    if not _RATE.match(text) or Decimal(text) == 0:
        raise RatesFileError(
            f"{where}, line {line}: usd_per_unit {text!r} for {currency} is not a positive decimal number; "
            "write the US dollars that one unit buys, like 0.6612 (a decimal point, no exponent or thousands separator)"
        )
    usd_per_unit = Decimal(text)

    day = None
    if width == 3 and cells[2]:
        try:
            day = date.fromisoformat(cells[2])
        except ValueError:
            raise RatesFileError(
                f"{where}, line {line}: date {cells[2]!r} is not a date; write it as YYYY-MM-DD, like 2017-05-01"
            ) from None

    if currency == "USD":
        if usd_per_unit != 1:
            raise RatesFileError(
                f"{where}, line {line}: USD has the rate {text}, but one US dollar is always 1 USD; remove the row"
            )
        return None
    return Rate(currency, usd_per_unit, day, line)


class CurrencyConverter:
    """Converter of non-USD transactions with ``rates``; ``unconverted`` sets what happens without a rate."""

    def __init__(self, rates: FxRates | None = None, unconverted: UnconvertedPolicy = "reject") -> None:
        if unconverted not in UNCONVERTED_POLICIES:
            raise ValueError(f"unconverted must be one of {UNCONVERTED_POLICIES}, got {unconverted!r}")
        self.rates = rates
        self.unconverted = unconverted

    def convert(self, transaction: Transaction) -> tuple[Transaction, bool]:
        """Return the transaction in US dollars and whether it was converted.

        A USD transaction, or one converted before, comes back unchanged.
        Raises ``MissingRateError`` when no rate applies and the policy is
        "reject", and ``ConversionError`` when the converted amount is
        below one cent or above the amount limit.
        """
        currency = transaction.currency
        if currency == "USD" or transaction.original_currency is not None:
            return transaction, False

        day = transaction.timestamp.date()
        rate = self.rates.rate_for(currency, day) if self.rates is not None else None
        if rate is None:
            if self.unconverted == "keep":
                return transaction, False
            raise MissingRateError(self._missing_reason(currency, day), value=currency,
                                   fix=self._missing_fix(currency, day))

        original = transaction.amount_usd
        converted = round_cash(original * rate.usd_per_unit)
        if converted <= 0 or converted > MAX_AMOUNT_USD:
            limit = "less than one cent" if converted <= 0 else f"above the limit of {MAX_AMOUNT_USD} USD"
            raise ConversionError(
                f"{original} {currency} at {rate.usd_per_unit} USD per {currency} is {converted} USD, {limit}",
                value=str(original),
                fix=f"check the amount, and the {currency} rate on line {rate.line} of the rates file",
            )
        result = transaction.model_copy(update={
            "amount_usd": converted,
            "original_amount": original,
            "original_currency": currency,
            "usd_per_unit": rate.usd_per_unit,
            "rate_date": rate.day,
        })
        return result, True

    def _missing_reason(self, currency: str, day: date) -> str:
        if self.rates is None:
            return f"the amount is in {currency} and no rates file was given, so it cannot be converted to USD"
        first = self.rates.first_day(currency)
        if first is not None:
            return (f"the rates file has no {currency} rate on or before {day.isoformat()} "
                    f"(its first {currency} rate is for {first.isoformat()})")
        return f"the rates file has no rate for {currency}"

    def _missing_fix(self, currency: str, day: date) -> str:
        row = f"'{currency},<USD per {currency}>,{day.isoformat()}'"
        if self.rates is None:
            where = f"pass --fx-rates FILE with a row like {row}"
        else:
            where = f"add a row like {row} to the file given with --fx-rates"
        return f"{where}, or pass --unconverted-currency keep to publish the amount unconverted, as if it were USD"


__all__ = [
    "ConversionError", "CurrencyConverter", "FxRates", "MissingRateError", "Rate", "RatesFileError",
    "UNCONVERTED_POLICIES", "load_rates", "parse_rates",
]
