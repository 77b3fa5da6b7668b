"""Errors the engine raises for bad input (never for its own bugs)."""

from __future__ import annotations

from typing import Sequence


class UnknownCardError(KeyError, ValueError):
    """A card id that is not in the catalog.

    It is both a KeyError (a failed look-up) and a ValueError (bad input), so
    callers that catch either see it. The message names the id and the
    closest ids that do exist.
    """

    def __init__(self, card_id: str, suggestions: Sequence[str] = (), known: Sequence[str] = ()):
        self.card_id = card_id
        self.suggestions = list(suggestions)
        if self.suggestions:
            hint = "did you mean " + " or ".join(self.suggestions) + "?"
        elif known:
            hint = "known cards: " + ", ".join(known)
        else:
            hint = "the catalog has no cards"
        self.message = f"unknown card {card_id!r}; {hint}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.message


class NoUsableCardError(ValueError):
    """No card in the wallet can be used at the merchant (for example, Costco U.S. takes Visa only)."""

    def __init__(self, merchant: str, rule_label: str, cards: Sequence[str]):
        self.merchant = merchant
        self.rule_label = rule_label
        self.cards = list(cards)
        super().__init__(
            f"no card in the wallet can be used at {merchant!r}: {rule_label}; wallet: {', '.join(cards)}. "
            "Add a card on an accepted network to the wallet."
        )


class InvalidModeError(ValueError):
    """An optimization mode other than "cash", "cashback" or "program:<name>"."""
