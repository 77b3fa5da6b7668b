"""Money arithmetic: every amount is a ``Decimal`` in US dollars.

Rounding is decided here and nowhere else:

* Input amounts are rounded to whole cents, half up, once, when a transaction
  is validated (``to_cents``). Bank exports carry cents already, so this only
  touches sub-cent input such as ``12.345``.
* Rewards are computed exactly (points = dollars x multiplier) and their cash
  value is rounded to whole cents, half even, when a recommendation is built
  (``round_cash``). Half even keeps sums over many transactions unbiased.
* An amount converted from another currency (``fx``) is rounded to whole
  cents with ``round_cash`` too, once, when it is converted.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ZERO = Decimal("0")
# The rounding of computed cash values. round_cash applies it. The engine's
# hottest loop (rules._listed_uncapped) passes it to quantize itself, which saves a call.
CASH_ROUNDING = ROUND_HALF_EVEN


# The rounding mode goes to quantize by position: CPython's decimal parses a
# keyword argument in about 100 ns more per call (timeit, Python 3.11).


def to_cents(amount: Decimal) -> Decimal:
    """Round an input amount to whole cents, half up."""
    return amount.quantize(CENT, ROUND_HALF_UP)


def round_cash(amount: Decimal) -> Decimal:
    """Round a computed cash value to whole cents, half even."""
    return amount.quantize(CENT, CASH_ROUNDING)


def cents(amount: Decimal) -> int:
    """Return a dollar amount as integer cents (the amount must be whole cents)."""
    return int((amount * 100).to_integral_value(rounding=ROUND_HALF_EVEN))


def usd_text(amount: Decimal) -> str:
    """Write a dollar amount with two decimals, as JSON output writes money: ``0.00``, not ``0``.

    It rounds with ``round_cash``, which leaves an amount in whole cents, such as a sum of cash values, unchanged.
    """
    return str(round_cash(amount))
