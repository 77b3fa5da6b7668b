"""The card catalog: real US cards with their earn rates, caps and fees, as data.

The catalog lives in ``rewardpilot/data/cards.json`` and is validated once,
at load, by the models below. Everything a later version needs (caps over
time, rotating calendars, booking channels, exclusions, networks, foreign
fees) is written down here even where this version does not act on it; see
``rules.py`` for what is applied.
"""

from __future__ import annotations

import difflib
import json
from datetime import date
from decimal import Decimal
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, field_validator, model_validator

from rewardpilot.engine.categories import normalize_text
from rewardpilot.engine.errors import UnknownCardError

Network = Literal["visa", "mastercard", "amex", "discover"]
CapPeriod = Literal["calendar_year", "calendar_quarter", "calendar_month", "statement_cycle", "cardmember_year"]
RuleKind = Literal["category", "top_category", "rotating"]
Unit = Literal["points", "miles", "USD"]

CARD_ID_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
Rate = Annotated[Decimal, Field(ge=0, le=100)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Cap(_Frozen):
    """A spending cap on one or more bonus rules.

    Rules that name the same ``cap_id`` share it (a combined cap). Above the
    cap a purchase earns ``then_rate``, or the card's base rate when unset.
    """

    cap_id: str
    amount_usd: Annotated[Decimal, Field(gt=0)]
    period: CapPeriod
    then_rate: Rate | None = None
    note: str = ""


class QuarterExclusion(_Frozen):
    """Merchants that a rotating quarter leaves out of its bonus, matched by name as ``exclusion_groups`` are.

    A purchase whose normalized merchant name contains one of ``merchants``
    as whole words earns no quarterly bonus and adds nothing to the
    quarterly cap. ``label`` names the merchants in the reasoning:
    "purchases at {label} are excluded from ...".
    """

    label: Annotated[str, Field(min_length=1)]
    merchants: Annotated[list[str], Field(min_length=1)]

    @field_validator("merchants")
    @classmethod
    def _check_merchants(cls, merchants: list[str]) -> list[str]:
        blank = [name for name in merchants if not normalize_text(name)]
        if blank:
            raise ValueError(f"merchant names {blank} contain no letter or digit, so they would match nothing; "
                             "write the name as it appears in card statements, such as 'walmart'")
        return merchants


class RotatingQuarter(_Frozen):
    """One quarter of a rotating-category calendar.

    ``stacks_with_category_rules`` marks a quarter whose bonus adds to the
    card's everyday ``category`` rules instead of replacing them. A purchase
    that matches both the quarter and an uncapped everyday rule then earns
    quarterly rate + everyday rate - base rate on the part under the
    quarterly cap, and the everyday rate (not the base rate) above it. Chase
    Freedom Flex's Q1 2026 dining is the case: 5% + 3% - 1% = 7% on up to
    $1,500, then 3%. The flag needs ``stacking_source``, the page that states
    the stacking and the date it was checked.

    ``exclusions`` lists merchants that the quarter's terms leave out, such
    as Walmart and Target from Chase's grocery stores in Q1 2025.
    """

    quarter: Annotated[str, Field(pattern=r"^\d{4}-Q[1-4]$")]
    starts: date
    ends: date
    categories: list[str] = []
    mcc: list[str] = []
    merchants: list[str] = []
    exclusions: list[QuarterExclusion] = []
    activation_deadline: date | None = None
    stacks_with_category_rules: StrictBool = False
    stacking_source: str = ""
    source: str = ""
    note: str = ""

    @model_validator(mode="after")
    def _check_stacking_source(self) -> "RotatingQuarter":
        if self.stacks_with_category_rules and not self.stacking_source.strip():
            raise ValueError(
                f"quarter {self.quarter} sets stacks_with_category_rules but has no stacking_source. "
                "Add the address of the page that states the stacking and the date it was checked."
            )
        return self

    @property
    def key(self) -> str:
        """The quarter as period keys and activations spell it: ``2025Q3``."""
        return self.quarter.replace("-", "")


class EarnRule(_Frozen):
    """A bonus rate on some categories.

    ``kind``: ``category`` applies whenever the purchase is in
    ``categories``; ``top_category`` applies to the one eligible category with
    the most spend in the cycle (Citi Custom Cash); ``rotating`` applies to
    the categories of the current quarter in ``calendar`` once activated.
    ``channel`` names a booking channel (an issuer's travel portal): such a
    rule applies only to purchases made through it, which a card transaction
    does not reveal.
    """

    rule_id: str
    rate: Rate
    categories: list[str]
    label: str
    kind: RuleKind = "category"
    us_only: bool = False
    excludes: list[str] = []
    cap_id: str | None = None
    channel: str | None = None
    requires_activation: bool = False
    calendar: list[RotatingQuarter] = []
    note: str = ""


class PooledValuation(_Frozen):
    """Points worth more when the same wallet holds one of ``with_cards``."""

    program: str
    with_cards: list[str]


class Card(_Frozen):
    card_id: Annotated[str, Field(pattern=CARD_ID_PATTERN)]
    name: str
    short_name: str
    issuer: str
    network: Network
    annual_fee_usd: Annotated[Decimal, Field(ge=0)]
    foreign_transaction_fee_percent: Annotated[Decimal, Field(ge=0, le=10)]
    program: str
    unit: Unit
    valuation_program: str | None = None
    pooled_valuation: PooledValuation | None = None
    base_rate: Rate
    base_label: str = "on other purchases"
    earn: list[EarnRule] = []
    caps: list[Cap] = []
    aliases: list[str] = []
    source: Annotated[str, Field(pattern=r"^https://")]
    terms_as_of: date
    time_zone: str = "America/New_York"
    notes: str = ""

    @property
    def values_as(self) -> str:
        """The valuation program for this card's points on their own."""
        return self.valuation_program or self.program

    @model_validator(mode="after")
    def _check_references(self) -> "Card":
        cap_ids = [cap.cap_id for cap in self.caps]
        if len(cap_ids) != len(set(cap_ids)):
            raise ValueError(f"{self.card_id}: duplicate cap_id")
        rule_ids = [rule.rule_id for rule in self.earn]
        if len(rule_ids) != len(set(rule_ids)):
            raise ValueError(f"{self.card_id}: duplicate rule_id")
        for rule in self.earn:
            if rule.cap_id and rule.cap_id not in cap_ids:
                raise ValueError(f"{self.card_id}: rule {rule.rule_id} names unknown cap {rule.cap_id!r}")
            if rule.calendar and rule.kind != "rotating":
                raise ValueError(f"{self.card_id}: rule {rule.rule_id} has a calendar but kind {rule.kind!r}. "
                                 "Only kind 'rotating' uses a calendar, so move it or change the kind.")
        if self.unit == "USD" and self.program != "cash back":
            raise ValueError(f"{self.card_id}: unit USD is for program 'cash back'")
        return self


class ExclusionGroup(_Frozen):
    """Merchants an issuer leaves out of a category, by MCC or by name."""

    label: str
    mcc: list[str] = []
    merchants: list[str] = []
    note: str = ""
    source: str = ""


class MerchantRule(_Frozen):
    """Card networks a merchant accepts, matched by merchant name and, optionally, MCC and country.

    A purchase matches when the merchant name contains one of ``merchants``
    and none of ``unless_merchants``, its MCC (when it has one) is in ``mcc``
    (when ``mcc`` is set), and its merchant country (when known) is in
    ``countries``.
    """

    label: str
    merchants: list[str]
    unless_merchants: list[str] = []
    mcc: list[str] = []
    countries: list[str] = []
    accepts: list[Network]
    note: str = ""
    source: str = ""
    checked_on: date | None = None


class Ineligible(_Frozen):
    categories: list[str]
    note: str = ""
    source: str = ""


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    transcribed_on: date
    about: str = ""
    ineligible: Ineligible
    exclusion_groups: dict[str, ExclusionGroup] = {}
    merchant_rules: dict[str, MerchantRule] = {}
    cards: list[Card]

    _by_id: dict[str, Card] = PrivateAttr(default_factory=dict)
    _by_name: dict[str, Card] = PrivateAttr(default_factory=dict)

    @field_validator("cards")
    @classmethod
    def _unique_ids(cls, cards: list[Card]) -> list[Card]:
        ids = [card.card_id for card in cards]
        duplicates = sorted({card_id for card_id in ids if ids.count(card_id) > 1})
        if duplicates:
            raise ValueError(f"duplicate card_id: {', '.join(duplicates)}")
        return cards

    @model_validator(mode="after")
    def _check_references(self) -> "Catalog":
        ids = {card.card_id for card in self.cards}
        for card in self.cards:
            for rule in card.earn:
                unknown = [group for group in rule.excludes if group not in self.exclusion_groups]
                if unknown:
                    raise ValueError(f"{card.card_id}: rule {rule.rule_id} excludes unknown group {unknown}")
            if card.pooled_valuation:
                missing = [other for other in card.pooled_valuation.with_cards if other not in ids]
                if missing:
                    raise ValueError(f"{card.card_id}: pooled_valuation names unknown cards {missing}")
        return self

    def model_post_init(self, __context) -> None:
        for card in self.cards:
            self._by_id[card.card_id] = card
            for name in (card.card_id, card.name, card.short_name, *card.aliases):
                self._by_name.setdefault(_normal(name), card)

    @property
    def ids(self) -> list[str]:
        return [card.card_id for card in self.cards]

    def get(self, card_id: str) -> Card:
        """Return a card by id; names and aliases ("csp", "Amex Gold") also work.

        Raises UnknownCardError, naming the closest ids, for anything else.
        """
        card = self._by_id.get(card_id)
        if card is not None:
            return card
        if isinstance(card_id, str):
            card = self._by_name.get(_normal(card_id))
            if card is not None:
                return card
        raise UnknownCardError(str(card_id), self.suggest(str(card_id)), self.ids)

    def __contains__(self, card_id: object) -> bool:
        return isinstance(card_id, str) and (card_id in self._by_id or _normal(card_id) in self._by_name)

    def suggest(self, text: str, limit: int = 3) -> list[str]:
        """The card ids closest to ``text``, best first."""
        wanted = _normal(text)
        names = list(self._by_name)
        matches = difflib.get_close_matches(wanted, names, n=10, cutoff=0.6)
        matches += [name for name in names if wanted and wanted in name and name not in matches]
        found: list[str] = []
        for name in matches:
            card_id = self._by_name[name].card_id
            if card_id not in found:
                found.append(card_id)
        return found[:limit]

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Catalog":
        """Load and validate a catalog file; the bundled one when no path is given."""
        if path is None:
            text = files("rewardpilot").joinpath("data", "cards.json").read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        return cls.model_validate(json.loads(text))


def _normal(text: str) -> str:
    """Lower-case, with every run of non-alphanumerics turned into one hyphen."""
    return normalize_text(text).replace(" ", "-")


@cache
def default_catalog() -> Catalog:
    """The bundled catalog, loaded and validated once per process."""
    return Catalog.load()
