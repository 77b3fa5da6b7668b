"""Spend already recorded in the current period, for caps and top categories.

A ``SpendState`` holds, per user, the cents already spent under each cap
and each top-category tally, keyed by hash field (``field_name``). The
consumer loads it from Redis once per micro-batch (``rewardpilot.caps``),
the engine reads it and adds each purchase to it in stream order, so two
transactions of one user in the same batch see each other's spend.

It also holds the wallet settings that change what a card earns: the
quarters in which each rotating-category card was activated and the day of
the month on which the user's statement cycle starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Iterable
from zoneinfo import ZoneInfo

DEFAULT_TIME_ZONE = "America/New_York"
MAX_CYCLE_DAY = 28


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


# (time zone, hour since the epoch) -> the one local date of that whole hour.
_HOUR_DATES: dict[tuple[str, float], date] = {}
_HOUR_DATES_LIMIT = 100_000


def local_date(moment: datetime, time_zone: str = DEFAULT_TIME_ZONE) -> date:
    """The calendar date of ``moment`` in ``time_zone`` (periods end at local midnight).

    ``moment`` must be timezone-aware. The date is remembered per time zone
    and UTC hour, for an hour that lies within one local date at one UTC
    offset. A time zone conversion costs several times the look-up, and the
    engine converts each purchase time once per rotating-category card.
    """
    hour = moment.timestamp() // 3600
    key = (time_zone, hour)
    found = _HOUR_DATES.get(key)
    if found is not None:
        return found

    tz = zone(time_zone)
    day = moment.astimezone(tz).date()
    start = datetime.fromtimestamp(hour * 3600, tz)
    end = datetime.fromtimestamp(hour * 3600 + 3599.999999, tz)
    # NOTE: equal offsets at both ends rule out a change of offset within the
    # hour, since no time zone changes its offset twice within one hour.
    if start.date() == end.date() == day and start.utcoffset() == end.utcoffset():
        if len(_HOUR_DATES) >= _HOUR_DATES_LIMIT:
            _HOUR_DATES.clear()
        _HOUR_DATES[key] = day
    return day


def quarter_key(day: date) -> str:
    """``2026Q4`` for any day from October 1 to December 31, 2026."""
    return f"{day.year}Q{(day.month - 1) // 3 + 1}"


def cycle_start(day: date, cycle_day: int) -> date:
    """The first day of the statement cycle containing ``day``, for cycles starting on ``cycle_day``."""
    if day.day >= cycle_day:
        return day.replace(day=cycle_day)
    if day.month == 1:
        return date(day.year - 1, 12, cycle_day)
    return date(day.year, day.month - 1, cycle_day)


def period_key(period: str, day: date, cycle_day: int | None = None) -> str:
    """The name of the cap period containing ``day``: "2026", "2026Q4", "2026-11" or "cycle:2026-11-15".

    A statement cycle without a known ``cycle_day`` is taken to be the
    calendar month. NOTE: ``cardmember_year`` is taken to be the calendar
    year, because the wallet does not record the account's anniversary.
    """
    if period in ("calendar_year", "cardmember_year"):
        return str(day.year)
    if period == "calendar_quarter":
        return quarter_key(day)
    if period == "calendar_month":
        return f"{day.year}-{day.month:02d}"
    if period == "statement_cycle":
        if cycle_day is None:
            return f"{day.year}-{day.month:02d}"
        return f"cycle:{cycle_start(day, cycle_day).isoformat()}"
    raise ValueError(f"unknown cap period {period!r}")


def field_name(card_id: str, tally: str, period: str) -> str:
    """The hash field of one tally: ``amex-gold|us-supermarkets|2026`` or ``citi-custom-cash|top:gas|2026-11``."""
    return f"{card_id}|{tally}|{period}"


def check_cycle_day(value: object) -> int:
    """A statement cycle start day between 1 and 28; raises ValueError naming the value otherwise."""
    try:
        day = int(str(value).strip())
    except ValueError:
        raise ValueError(f"cycle day {value!r} is not a whole number; use a day of the month from 1 to 28") from None
    if not 1 <= day <= MAX_CYCLE_DAY:
        raise ValueError(f"cycle day {value!r} is out of range; use a day of the month from 1 to {MAX_CYCLE_DAY}")
    return day


@dataclass
class UserSpend:
    """One user's recorded spend (cents by hash field) and earn-affecting wallet settings."""

    spend: dict[str, int] = field(default_factory=dict)
    activations: frozenset[str] = frozenset()   # "chase-freedom-flex:2026Q4"
    cycle_day: int | None = None

    def activated(self, card_id: str, quarter: str) -> bool:
        return f"{card_id}:{quarter}" in self.activations


class SpendState:
    """Spend per user and hash field for one batch, updated in place as the batch is recommended."""

    def __init__(self) -> None:
        self.users: dict[str, UserSpend] = {}

    def user(self, user_id: str) -> UserSpend:
        found = self.users.get(user_id)
        if found is None:
            found = self.users[user_id] = UserSpend()
        return found

    def set_terms(self, user_id: str, *, activations: dict[str, Iterable[str]] | None = None,
                  cycle_day: int | None = None) -> None:
        """Record a user's rotating-category activations ({card_id: ["2026Q4"]}) and cycle start day."""
        entry = self.user(user_id)
        entry.activations = frozenset(
            f"{card_id}:{quarter}" for card_id, quarters in (activations or {}).items() for quarter in quarters
        )
        entry.cycle_day = cycle_day

    def spent(self, user_id: str, name: str) -> int:
        entry = self.users.get(user_id)
        return entry.spend.get(name, 0) if entry else 0

    def add(self, user_id: str, name: str, cents: int) -> None:
        spend = self.user(user_id).spend
        spend[name] = spend.get(name, 0) + cents
