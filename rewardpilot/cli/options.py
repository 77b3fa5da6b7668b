"""Option parsing shared by several commands."""

from __future__ import annotations

import typer

from rewardpilot.cli.context import console


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
