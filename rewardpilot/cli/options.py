"""Option parsing shared by several commands."""

from __future__ import annotations

import math

import typer
from rich.markup import escape

from rewardpilot.cli.context import console

# The maximum of a seconds option such as --lease or --interval: 365 days, far above any useful
# value. inf, and values near 1e308, overflow the conversion to whole milliseconds and time.sleep.
MAX_OPTION_SECONDS = 365 * 86_400


def split_cards(values: list[str] | None) -> list[str] | None:
    """Accept ``--wallet a --wallet b`` and ``--wallet a,b``; None when none given."""
    if not values:
        return None
    cards = [card.strip() for value in values for card in value.split(",") if card.strip()]
    return cards or None


def check_cards(cards: list[str] | None) -> list[str] | None:
    """Exit with the unknown id and close matches when a card is not in the catalog."""
    if not cards:
        return cards
    from rewardpilot.engine import RulesEngine, UnknownCardError

    catalog = RulesEngine.default().catalog
    for card in cards:
        try:
            catalog.get(card)
        except UnknownCardError as exc:
            console.print(f"[red]error:[/red] {exc.args[0] if exc.args else exc}")
            raise typer.Exit(2) from None
    return cards


def age_seconds(text: str | None, option: str) -> float | None:
    """Parse an age option such as ``--trim-older-than 30d``; exit 2 naming the option when it is invalid."""
    if text is None:
        return None
    from rewardpilot.retention import InvalidAgeError, parse_age

    try:
        return parse_age(text).total_seconds()
    except InvalidAgeError as exc:
        console.print(f"[red]error:[/red] {option}: {exc}")
        raise typer.Exit(2) from None


def check_seconds(value: float | None, option: str, maximum: float = MAX_OPTION_SECONDS) -> None:
    """Exit 2 naming the option when a number of seconds is NaN, infinite or above ``maximum``; Typer checks the minimum."""
    if value is None or (math.isfinite(value) and value <= maximum):
        return
    console.print(
        f"[red]error:[/red] {escape(option)} {value} is invalid: give a finite number of seconds "
        f"up to {maximum:,.0f} ({maximum / 86_400:g} days)",
        soft_wrap=True, highlight=False,
    )
    raise typer.Exit(2)
