"""Merchant acceptance: which card networks a merchant takes.

The rules live in ``merchant_rules`` in cards.json, each with its source
(for example, Costco U.S. warehouses take Visa only). A card whose network
a matching rule does not list is never recommended at that merchant.
"""

from __future__ import annotations

from dataclasses import dataclass

from rewardpilot.engine.catalog import MerchantRule
from rewardpilot.engine.categories import normalize_text


@dataclass(frozen=True, slots=True)
class _Matcher:
    rule_id: str
    rule: MerchantRule
    needles: tuple[str, ...]
    unless: tuple[str, ...]
    mcc: frozenset[str]
    countries: frozenset[str]


class AcceptanceRules:
    """Finds the merchant rule, if any, that limits the networks accepted for a purchase."""

    def __init__(self, rules: dict[str, MerchantRule]):
        self._matchers = tuple(
            _Matcher(
                rule_id=rule_id,
                rule=rule,
                needles=tuple(_padded(name) for name in rule.merchants),
                unless=tuple(_padded(name) for name in rule.unless_merchants),
                mcc=frozenset(rule.mcc),
                countries=frozenset(rule.countries),
            )
            for rule_id, rule in rules.items()
        )

    def match(self, merchant: str, mcc: str | None, country: str | None) -> tuple[str, MerchantRule] | None:
        """Find the first rule matching the purchase, as (rule_id, rule); None when every network is accepted.

        An unknown MCC or country does not rule a purchase out, because bank
        exports often leave them empty.
        """
        padded = _padded(merchant)
        for matcher in self._matchers:
            if not any(needle in padded for needle in matcher.needles):
                continue
            if any(needle in padded for needle in matcher.unless):
                continue
            if matcher.mcc and mcc is not None and mcc not in matcher.mcc:
                continue
            if matcher.countries and country is not None and country not in matcher.countries:
                continue
            return matcher.rule_id, matcher.rule
        return None


def _padded(text: str) -> str:
    """Normalized text with spaces around it, so "costco" matches a whole word."""
    return f" {normalize_text(text)} "
