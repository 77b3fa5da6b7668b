"""The rules engine: the best card in a wallet (or the catalog) for one purchase.

How a card's value on a purchase is worked out:

* The purchase is placed in a category (``categories.py``).
* Each card's best applicable rule for that category gives its rate. A
  ``category`` rule applies unless it is U.S.-only and the purchase is
  abroad, or the merchant is in one of its exclusion groups. A ``rotating``
  rule (Chase Freedom Flex, Discover it) applies when the purchase date, in
  the card's time zone, falls in a quarter of its calendar whose categories,
  MCCs or merchant names match, unless the quarter's ``exclusions`` name
  the merchant (Walmart and Target in Freedom Flex's Q1 2025 grocery
  stores). Then the card earns no quarterly bonus, the purchase adds nothing
  to the quarterly cap and ``passed_over`` names the exclusion. In a quarter marked
  ``stacks_with_category_rules``, a purchase that also matches an everyday
  ``category`` rule earns quarterly rate + everyday rate - base rate under
  the quarterly cap and the everyday rate above it (Freedom Flex dining in
  Q1 2026: 7%, then 3%). A ``top_category`` rule (Citi Custom Cash)
  applies when the category leads the card's spend this billing cycle.
  Booking-channel rules are skipped (a card transaction does not say how it
  was booked). No rule means the base rate; cash-like transactions and
  wagers earn nothing.
* A card whose network the merchant does not accept (``merchant_rules``,
  e.g. Costco U.S. takes Visa only) is left out and listed in
  ``passed_over`` with the reason.
* With a ``SpendState`` (``state.py``), capped rules use the spend already
  recorded this period: the part of a purchase under the cap earns the bonus
  rate and the rest the cap's ``then_rate`` (or the base rate). Rotating
  rules need the quarter's activation; the top category is the one with the
  most spend this cycle including this purchase. Without a state, no spend
  is assumed: a single purchase above a cap is still split, rotating
  categories are assumed activated and the category is assumed to be the
  top one, and each assumption lowers the confidence.
* Earned = amount x rate (points or miles), or amount x rate% for cash back.
* Cash value = amount x (rate x cents per point - foreign fee %) / 100,
  rounded to cents half-even (``money.round_cash``). The foreign fee applies
  when the currency is not USD or the merchant country is set and not US.
  Points of a card whose ``pooled_valuation`` partner is in the same wallet
  are valued at the partner program's rate (Freedom + Sapphire).
* Effective rate = cash value / amount, as a fraction (0.08 = 8%) with four
  decimal places, half-even.
* Cards are ranked by exact cash value, then lower annual fee, then
  card_id; the first is recommended and the next three are the
  alternatives. Mode ``cashback`` values every program at its fixed cash
  redemption floor (``floor_cents`` in valuations.json) instead of the
  transfer-partner estimate; mode ``program:<name>`` ranks the cards earning
  that program first.

Confidence starts from how the category was found (0.95 by MCC, 0.75 by
category text, 0.60 by MCC range, 0.50 for "other" by default), then drops
0.10 when the top two cards are within a cent of each other and 0.10 when
the winning rule rests on an assumption (a top category or an activation
taken for granted), never below 0.05.

Rates do not depend on the amount, so rankings are cached per (wallet,
category, abroad, exclusion tags, valuations, mode, rotating matches,
stacking quarters, merchant rule). A recommendation then costs a few
Decimal multiplications and building the result. The wallet is ranked again
only when a cap or the top category can change the order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cache, lru_cache
from typing import Mapping, Sequence

from rewardpilot import ENGINE_VERSION
from rewardpilot.engine.catalog import Card, Cap, Catalog, EarnRule, RotatingQuarter, default_catalog
from rewardpilot.engine.categories import OTHER, CategoryMap, Placement, default_categories, normalize_text
from rewardpilot.engine.errors import InvalidModeError, NoUsableCardError
from rewardpilot.engine.evaluation import CardFacts, Evaluation, Listed
from rewardpilot.engine.merchants import AcceptanceRules
from rewardpilot.engine.state import SpendState, UserSpend, field_name, local_date, period_key
from rewardpilot.engine.valuations import ValuationTable, default_valuations, parse_cents
from rewardpilot.models import CardRef, Recommendation, Rewards, Transaction, WalletSource
from rewardpilot.money import CASH_ROUNDING, CENT, ZERO, cents as to_int_cents, round_cash

HUNDRED = Decimal(100)
_THOUSAND = Decimal(1000)
CATALOG_NOTE = "No wallet on file for this user, so this is the best card in the catalog for this purchase"
RUN_NOTE = "No wallet on file for this user, so this is the best card in the wallet named for this run"
UPDATE_WALLET_NOTE = "update the wallet with `rewardpilot wallet set USER CARD...`"
# Reasoning notes naming what a purchase was judged against, by wallet source, for a user without a stored wallet.
_WALLET_NOTES: dict[str, tuple[str, ...]] = {"user": (), "run": (RUN_NOTE,), "catalog": (CATALOG_NOTE,)}
RATE_PLACES = Decimal("0.0001")
# A value that rounds to zero is written unsigned. Decimal keeps the sign of a zero, so
# a purchase whose foreign fee exceeds its reward by under half a cent rounds to -0.00.
_ZERO_CASH = Decimal("0.00")
_ZERO_RATE = Decimal("0.0000")
ONE_CENT = Decimal("0.01")
MAX_ALTERNATIVES = 3
CLOSE_CALL_PENALTY = 0.10
ASSUMPTION_PENALTY = 0.10
MIN_CONFIDENCE = 0.05
_CACHE_SIZE = 65536

_SOURCES = ("user", "run", "catalog")
_NO_CARDS: frozenset[str] = frozenset()
DEFAULT_MODE = "cash"
PROGRAM_MODE_PREFIX = "program:"



@dataclass(frozen=True, slots=True)
class _Option:
    """A bonus rule of one card, ready to test against a purchase."""

    rule: EarnRule
    rate: Decimal
    us_only: bool
    excludes: frozenset[str]
    cap: Cap | None
    top: bool
    # The everyday rule that a stacked rotating bonus adds to. Its rate also applies
    # above the quarterly cap. None on every other option.
    stacked_with: _Option | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    """One card, precomputed for ranking."""

    card: Card
    ref: CardRef
    facts: CardFacts
    annual_fee: Decimal
    fee_percent: Decimal
    base_rate: Decimal
    options: dict[str, tuple[_Option, ...]]
    rotating: _Option | None
    calendar: tuple[RotatingQuarter, ...]
    stacked: dict[str, _Option]   # everyday rule_id -> the rotating bonus stacked on it
    top: _Option | None
    values_as: str
    pool_program: str | None
    pool_with: frozenset[str]
    cash_back: bool


@dataclass(frozen=True, slots=True)
class _Ranked:
    """One card's standing for a (category, abroad, tags, valuations, mode, ...) situation."""

    plan: _Plan
    option: _Option | None
    per_dollar: Decimal        # cash value per dollar spent, USD
    earn_per_dollar: Decimal   # earned units per dollar (points, miles or USD)
    phrase: str                # "4x Membership Rewards points at U.S. supermarkets, valued at 2.0 cents each"
    then_per_dollar: Decimal   # the same above the option's cap
    then_earn_per_dollar: Decimal
    then_phrase: str
    fee_applied: Decimal       # foreign fee percent charged, 0 at home
    assumed: bool              # the rate rests on an assumption (top category, activation)
    preferred: bool            # earns the program named by a program:<name> mode


@dataclass(frozen=True, slots=True)
class _Ranking:
    entries: tuple[_Ranked, ...]
    passed_over: tuple[str, ...]
    smallest_cap: Decimal | None   # the smallest cap among the entries' options, None when none is capped
    has_top: bool


@dataclass(slots=True)
class _Valued:
    """One card's rewards on one purchase, after caps and the top category."""

    entry: _Ranked
    cash: Decimal          # exact, before rounding
    earned: Decimal
    bonus_amount: Decimal  # the part of the purchase at the bonus rate
    note: str              # why the bonus covers less than the whole purchase, "" when it covers it all

    @property
    def phrase(self) -> str:
        return self.entry.phrase if self.bonus_amount else self.entry.then_phrase


@dataclass(frozen=True, slots=True)
class _PurchaseFacts:
    """The part of a purchase's context that depends only on its merchant, MCC, category text, country, currency and wallet."""

    placement: Placement
    category: str
    abroad: bool
    tags: frozenset[str]
    merchant_rule: str | None
    reachable: tuple[str, ...]   # rotating cards of the wallet that some quarter of theirs could match


@dataclass(slots=True)
class _Context:
    """The facts of one purchase that rules test: category, place, merchant rule and rotating matches."""

    placement: Placement
    category: str
    abroad: bool
    tags: frozenset[str]
    merchant_rule: str | None
    rotating: frozenset[str]          # card ids whose rotating bonus matches (and, with a state, is activated)
    stacked: frozenset[str]           # those of them whose quarter stacks with everyday category rules
    quarters: tuple[tuple[str, str], ...]  # (card_id, quarter key) of every rotating card considered
    inactive: tuple[str, ...]         # card ids whose rotating bonus matches but is not activated
    # (card_id, label) of rotating cards whose quarter matches but whose terms exclude the merchant
    excluded: tuple[tuple[str, str], ...]
    moment: datetime

    def day(self, plan: _Plan) -> date:
        """Return the purchase date in the card's time zone, where its periods end at midnight."""
        return local_date(self.moment, plan.card.time_zone)


class RulesEngine:
    """Recommends cards from a catalog, valuations and a category map.

    ``RulesEngine.default()`` is the bundled data, loaded once per process.
    """

    def __init__(self, catalog: Catalog, valuations: ValuationTable, categories: CategoryMap):
        self.catalog = catalog
        self.valuations = valuations
        self.categories = categories
        self.engine_version = ENGINE_VERSION
        self._check_data()

        self._ineligible = frozenset(catalog.ineligible.categories)
        self._groups = {
            name: (frozenset(group.mcc), tuple(f" {normalize_text(m)} " for m in group.merchants))
            for name, group in catalog.exclusion_groups.items()
        }
        self._acceptance = AcceptanceRules(catalog.merchant_rules)
        self._plans: dict[str, _Plan] = {card.card_id: self._plan(card) for card in catalog.cards}
        self._all_ids: tuple[str, ...] = tuple(sorted(self._plans))
        self._rotating_ids = frozenset(card_id for card_id, plan in self._plans.items() if plan.rotating)
        self._rotating_reach = {
            card_id: (
                frozenset(c for quarter in self._plans[card_id].calendar for c in quarter.categories),
                frozenset(code for quarter in self._plans[card_id].calendar for code in quarter.mcc),
            )
            for card_id in self._rotating_ids
        }
        self._stacking_quarters = frozenset(
            (card_id, quarter.key) for card_id in self._rotating_ids
            for quarter in self._plans[card_id].calendar if quarter.stacks_with_category_rules
        )
        self._rotating_names = {
            card_id: tuple(f" {normalize_text(name)} " for quarter in self._plans[card_id].calendar
                           for name in quarter.merchants)
            for card_id in self._rotating_ids
        }
        # (card_id, quarter key) -> ((label, padded merchant names), ...) for quarters with exclusions.
        self._quarter_exclusions = {
            (card_id, quarter.key): tuple(
                (exclusion.label, tuple(f" {normalize_text(name)} " for name in exclusion.merchants))
                for exclusion in quarter.exclusions
            )
            for card_id in self._rotating_ids
            for quarter in self._plans[card_id].calendar if quarter.exclusions
        }
        self._exclusion_categories = frozenset(
            category
            for plan in self._plans.values()
            for category, options in plan.options.items()
            if any(option.excludes for option in options)
        )
        self._earned_programs = frozenset(card.program for card in catalog.cards)
        self._default_values = valuations.defaults()
        self._cash_values = {
            name: program.floor_cents if program.basis == "estimate" and program.floor_cents is not None
            else program.cents_per_point
            for name, program in valuations.programs.items()
        }
        self._values_cache: dict[tuple, dict[str, Decimal]] = {(): self._default_values}
        self._wallets: dict[tuple, tuple[str, ...]] = {}
        self._wallet_rotating: dict[tuple | None, tuple[str, ...]] = {}
        self._rank = lru_cache(maxsize=_CACHE_SIZE)(self._rank_uncached)
        self._merchant_tags = lru_cache(maxsize=_CACHE_SIZE)(self._merchant_tags_uncached)
        self._merchant_rule = lru_cache(maxsize=_CACHE_SIZE)(self._merchant_rule_uncached)
        self._rotating_match = lru_cache(maxsize=_CACHE_SIZE)(self._rotating_match_uncached)
        self._rotating_by_name = lru_cache(maxsize=_CACHE_SIZE)(self._rotating_by_name_uncached)
        self._purchase_facts = lru_cache(maxsize=_CACHE_SIZE)(self._purchase_facts_uncached)

    @classmethod
    def default(cls) -> "RulesEngine":
        """The engine over the bundled catalog, valuations and MCC table (cached)."""
        return _default_engine()

    # -- set-up -------------------------------------------------------------

    def _check_data(self) -> None:
        known_categories = self.categories.categories
        programs = self.valuations.programs
        for category in self.catalog.ineligible.categories:
            if category not in known_categories:
                raise ValueError(f"ineligible category {category!r} is not in the category table")
        for card in self.catalog.cards:
            for rule in card.earn:
                unknown = [c for c in rule.categories if c not in known_categories]
                for quarter in rule.calendar:
                    unknown += [c for c in quarter.categories if c not in known_categories]
                if unknown:
                    raise ValueError(f"{card.card_id}: rule {rule.rule_id} names unknown categories {unknown}")
            wanted = [card.program, card.values_as]
            if card.pooled_valuation:
                wanted.append(card.pooled_valuation.program)
            missing = [p for p in wanted if p not in programs]
            if missing:
                raise ValueError(f"{card.card_id}: no valuation for program(s) {missing}")

    def _plan(self, card: Card) -> _Plan:
        caps = {cap.cap_id: cap for cap in card.caps}
        options: dict[str, list[_Option]] = {}
        rotating: _Option | None = None
        calendar: tuple[RotatingQuarter, ...] = ()
        top: _Option | None = None
        for rule in card.earn:
            if rule.channel is not None:
                continue  # a card transaction does not say how it was booked
            option = _Option(
                rule=rule, rate=rule.rate, us_only=rule.us_only, excludes=frozenset(rule.excludes),
                cap=caps.get(rule.cap_id) if rule.cap_id else None, top=rule.kind == "top_category",
            )
            if rule.kind == "rotating":
                rotating, calendar = option, tuple(rule.calendar)
                continue
            if option.top:
                top = option
            for category in rule.categories:
                options.setdefault(category, []).append(option)
        ordered = {
            category: tuple(sorted(found, key=lambda o: (-o.rate, o.top, o.rule.rule_id)))
            for category, found in options.items()
        }
        stacked = self._stacked_options(card, rotating, calendar, ordered)
        pooled = card.pooled_valuation
        ref = CardRef(card_id=card.card_id, name=card.name, issuer=card.issuer)
        return _Plan(
            card=card,
            ref=ref,
            facts=CardFacts.of(ref, card.unit, card.program),
            annual_fee=card.annual_fee_usd,
            fee_percent=card.foreign_transaction_fee_percent,
            base_rate=card.base_rate,
            options=ordered,
            rotating=rotating,
            calendar=calendar,
            stacked=stacked,
            top=top,
            values_as=card.values_as,
            pool_program=pooled.program if pooled else None,
            pool_with=frozenset(pooled.with_cards) if pooled else frozenset(),
            cash_back=card.unit == "USD",
        )

    @staticmethod
    def _stacked_options(
        card: Card, rotating: _Option | None, calendar: tuple[RotatingQuarter, ...],
        options: dict[str, tuple[_Option, ...]],
    ) -> dict[str, _Option]:
        """Build the rotating bonus stacked on each uncapped everyday ``category`` rule, keyed by that rule's id.

        Empty unless a quarter of the calendar sets ``stacks_with_category_rules``.
        The stacked rate is quarterly rate + everyday rate - base rate, under the
        rotating rule's cap. Above the cap the everyday rate applies.
        """
        if rotating is None or not any(quarter.stacks_with_category_rules for quarter in calendar):
            return {}
        stacked: dict[str, _Option] = {}
        for found in options.values():
            for everyday in found:
                if everyday.top or everyday.cap is not None or everyday.rule.rule_id in stacked:
                    continue
                stacked[everyday.rule.rule_id] = _Option(
                    rule=rotating.rule,
                    rate=rotating.rate + everyday.rate - card.base_rate,
                    us_only=rotating.us_only or everyday.us_only,
                    excludes=rotating.excludes | everyday.excludes,
                    cap=rotating.cap,
                    top=False,
                    stacked_with=everyday,
                )
        return stacked

    # -- look-ups -----------------------------------------------------------

    def _wallet_key(self, wallet: Sequence[str]) -> tuple[str, ...]:
        if isinstance(wallet, (str, bytes)):
            raise ValueError("wallet must be a list of card ids, not one string")
        raw = wallet if isinstance(wallet, tuple) else tuple(wallet)
        key = self._wallets.get(raw)
        if key is None:
            if not raw:
                raise ValueError("wallet is empty; pass wallet=None to judge against the whole catalog")
            key = tuple(sorted({self.catalog.get(card_id).card_id for card_id in raw}))
            if len(self._wallets) < _CACHE_SIZE:
                self._wallets[raw] = key
        return key

    def _values_key(self, valuations: Mapping[str, object] | None) -> tuple:
        """A hashable key for a set of overrides; the merged table is kept in ``_values_cache``."""
        if not valuations:
            return ()
        key = tuple(sorted((program, parse_cents(program, value)) for program, value in valuations.items()))
        if key not in self._values_cache:
            merged = self.valuations.merged(dict(key))  # raises ValueError for an unknown program
            if len(self._values_cache) >= 4096:
                self._values_cache = {(): self._default_values}
                self._rank.cache_clear()
            self._values_cache[key] = merged
        return key

    def check_mode(self, mode: str | None) -> str:
        """Validate a mode: "cash" (default), "cashback" or "program:<name>"; raise InvalidModeError.

        The name must be a program that some catalog card earns (``Card.program``),
        because the ranking prefers the cards earning it. A valuation name such as
        "Chase Ultimate Rewards (cash back)" is rejected with the program to use.
        """
        if mode is None or mode == DEFAULT_MODE or mode == "cashback":
            return mode or DEFAULT_MODE
        if isinstance(mode, str) and mode.startswith(PROGRAM_MODE_PREFIX):
            program = mode[len(PROGRAM_MODE_PREFIX):].strip()
            if program in self._earned_programs:
                return PROGRAM_MODE_PREFIX + program
            raise InvalidModeError(self._unknown_program_message(mode, program))
        raise InvalidModeError(f"mode {mode!r} is not one of cash, cashback or program:<program name>")

    def _unknown_program_message(self, mode: str, program: str) -> str:
        known = ", ".join(sorted(self._earned_programs))
        valued = [card for card in self.catalog.cards if card.values_as == program and card.program != program]
        if not valued:
            return f"mode {mode!r} names no known program; known programs: {known}"
        cards = ", ".join(card.card_id for card in valued)
        earned = sorted({card.program for card in valued})
        use = " or ".join(f"program:{name}" for name in earned)
        return (f"mode {mode!r} names a valuation, not a program that cards earn. The cards valued at "
                f"{program!r} ({cards}) earn {', '.join(earned)}, so use {use}. Known programs: {known}")

    def _check_retired(self, retired_cards: Sequence[str]) -> None:
        """Raise ValueError unless ``retired_cards`` is a list of card ids that the catalog lacks."""
        if isinstance(retired_cards, (str, bytes)):
            raise ValueError(f"retired_cards {retired_cards!r} is one string, not a list. "
                             f"Pass a list such as [{retired_cards!r}]")
        known = [card for card in retired_cards if card in self.catalog]
        if known:
            raise ValueError(f"retired_cards names {', '.join(map(str, known))}, which the catalog has. Pass only "
                             "the stored cards that the catalog lacks, and put the others in the wallet")

    def _merchant_tags_uncached(self, merchant: str) -> frozenset[str]:
        padded = f" {normalize_text(merchant)} "
        return frozenset(
            name for name, (_, needles) in self._groups.items() if any(needle in padded for needle in needles)
        )

    def _tags(self, merchant: str, mcc: str | None, category: str) -> frozenset[str]:
        if category not in self._exclusion_categories:
            return frozenset()
        tags = self._merchant_tags(merchant)
        if mcc is not None:
            by_mcc = [name for name, (codes, _) in self._groups.items() if mcc in codes]
            if by_mcc:
                tags = tags | frozenset(by_mcc)
        return tags

    def _merchant_rule_uncached(self, merchant: str, mcc: str | None, country: str | None) -> str | None:
        found = self._acceptance.match(merchant, mcc, country)
        return found[0] if found else None

    def _rotating_by_name_uncached(self, merchant: str) -> frozenset[str]:
        """Find the rotating cards with a calendar merchant name (in any quarter) in ``merchant``."""
        padded = f" {normalize_text(merchant)} "
        return frozenset(
            card_id for card_id, needles in self._rotating_names.items() if any(n in padded for n in needles)
        )

    def _rotating_match_uncached(
        self, card_id: str, day: date, category: str, mcc: str | None, merchant: str
    ) -> tuple[str, str] | None:
        """Find the quarter of ``card_id``'s calendar on ``day`` whose categories, MCCs or merchants cover the purchase.

        Returns (quarter key, exclusion label), where the label is empty
        unless one of the quarter's ``exclusions`` names the merchant, or
        None when no quarter covers the purchase.
        """
        for quarter in self._plans[card_id].calendar:
            if not quarter.starts <= day <= quarter.ends:
                continue
            padded = f" {normalize_text(merchant)} "
            if not (
                category in quarter.categories
                or (mcc is not None and mcc in quarter.mcc)
                or any(f" {normalize_text(name)} " in padded for name in quarter.merchants)
            ):
                return None
            for label, needles in self._quarter_exclusions.get((card_id, quarter.key), ()):
                if any(needle in padded for needle in needles):
                    return quarter.key, label
            return quarter.key, ""
        return None

    def _context(
        self, transaction: Transaction, wallet_key: tuple[str, ...] | None, user: UserSpend | None
    ) -> _Context:
        facts = self._purchase_facts(transaction.mcc, transaction.category, transaction.merchant,
                                     transaction.merchant_country, transaction.currency, wallet_key)
        rotating: list[str] = []
        stacked = _NO_CARDS
        inactive: list[str] = []
        excluded: list[tuple[str, str]] = []
        quarters: list[tuple[str, str]] = []
        for card_id in facts.reachable:
            day = local_date(transaction.timestamp, self._plans[card_id].card.time_zone)
            match = self._rotating_match(card_id, day, facts.category, transaction.mcc, transaction.merchant)
            if match is None:
                continue
            quarter, exclusion = match
            quarters.append((card_id, quarter))
            if exclusion:
                # Not in ``rotating``, so the card earns no quarterly bonus and adds nothing to the quarterly cap.
                excluded.append((card_id, exclusion))
            elif user is not None and not user.activated(card_id, quarter):
                inactive.append(card_id)
            else:
                rotating.append(card_id)
                if (card_id, quarter) in self._stacking_quarters:
                    stacked = stacked.union((card_id,))

        # Arguments go by position, in field order, because ten keywords make the
        # call about 0.5 us slower (timeit, CPython 3.11), and it runs once per purchase.
        return _Context(
            facts.placement, facts.category, facts.abroad, facts.tags, facts.merchant_rule,
            frozenset(rotating), stacked, tuple(quarters), tuple(inactive), tuple(excluded),
            transaction.timestamp,
        )

    def _purchase_facts_uncached(
        self, mcc: str | None, category_text: str, merchant: str, country: str | None, currency: str,
        wallet_key: tuple[str, ...] | None,
    ) -> _PurchaseFacts:
        """Compute the part of a purchase's context that does not depend on its date or user (cached)."""
        placement = self.categories.place(mcc, category_text, merchant)
        category = placement.category
        reachable: list[str] = []
        candidates = self._rotating_in(wallet_key)
        if candidates and category not in self._ineligible:
            named = self._rotating_by_name(merchant)
            for card_id in candidates:
                categories, codes = self._rotating_reach[card_id]
                # Leave out a card when no quarter of its calendar could match, before any date arithmetic.
                if category in categories or mcc in codes or card_id in named:
                    reachable.append(card_id)
        return _PurchaseFacts(
            placement=placement,
            category=category,
            abroad=currency != "USD" or (country is not None and country != "US"),
            tags=self._tags(merchant, mcc, category),
            merchant_rule=self._merchant_rule(merchant, mcc, country),
            reachable=tuple(reachable),
        )

    def _rotating_in(self, wallet_key: tuple[str, ...] | None) -> tuple[str, ...]:
        """Return the rotating-category cards of a wallet, sorted (cached per wallet)."""
        found = self._wallet_rotating.get(wallet_key)
        if found is None:
            ids = self._rotating_ids if wallet_key is None else self._rotating_ids.intersection(wallet_key)
            found = tuple(sorted(ids))
            if len(self._wallet_rotating) < _CACHE_SIZE:
                self._wallet_rotating[wallet_key] = found
        return found

    def _choose(
        self, plan: _Plan, category: str, abroad: bool, tags: frozenset[str], rotating: frozenset[str],
        stacked: frozenset[str],
    ) -> tuple[_Option | None, str]:
        """Pick a card's best applicable bonus rule, and the label of an exclusion that removed a better one.

        ``stacked`` lists the cards whose current quarter stacks with their
        everyday rules. For those cards the stacked options of this category's
        everyday rules come first, and the plain rotating option covers
        purchases that match no everyday rule.
        """
        if category in self._ineligible:
            return None, ""
        excluded = ""
        candidates = plan.options.get(category, ())
        card_id = plan.card.card_id
        if plan.rotating is not None and card_id in rotating:
            bonuses: tuple[_Option, ...] = (plan.rotating,)
            if card_id in stacked:
                bonuses = tuple(plan.stacked[option.rule.rule_id] for option in candidates
                                if option.rule.rule_id in plan.stacked) + bonuses
            candidates = tuple(sorted((*bonuses, *candidates), key=lambda o: -o.rate))
        for candidate in candidates:
            if candidate.us_only and abroad:
                continue
            if candidate.excludes and not candidate.excludes.isdisjoint(tags):
                # A stacked option's exclusion is reported by its own rotating or everyday rule.
                if not excluded and candidate.stacked_with is None:
                    group = sorted(candidate.excludes & tags)[0]
                    excluded = f"{self.catalog.exclusion_groups[group].label} are excluded from its " \
                               f"{_number(candidate.rate)}{'%' if plan.cash_back else 'x'} {candidate.rule.label}"
                continue
            return candidate, excluded
        return None, excluded

    # -- ranking ------------------------------------------------------------

    def _values(self, values_key: tuple, mode: str) -> dict[str, Decimal]:
        if mode == "cashback":
            return self._cash_values
        return self._values_cache.get(values_key) or self.valuations.merged(dict(values_key))

    def _rank_uncached(
        self, wallet_key: tuple[str, ...] | None, category: str, abroad: bool,
        tags: frozenset[str], values_key: tuple, mode: str, rotating: frozenset[str], stacked: frozenset[str],
        merchant_rule: str | None,
    ) -> _Ranking:
        values = self._values(values_key, mode)
        ids = self._all_ids if wallet_key is None else wallet_key
        held = frozenset(wallet_key) if wallet_key is not None else frozenset()
        ineligible = category in self._ineligible
        preferred_program = mode[len(PROGRAM_MODE_PREFIX):] if mode.startswith(PROGRAM_MODE_PREFIX) else None
        rule = self.catalog.merchant_rules.get(merchant_rule) if merchant_rule else None

        ranked: list[_Ranked] = []
        passed_over: list[str] = []
        smallest_cap: Decimal | None = None
        has_top = False
        for card_id in ids:
            plan = self._plans[card_id]
            if rule is not None and plan.card.network not in rule.accepts:
                passed_over.append(f"{plan.card.short_name}: {rule.label}")
                continue
            option, excluded = self._choose(plan, category, abroad, tags, rotating, stacked)
            if excluded and wallet_key is not None:
                passed_over.append(f"{plan.card.short_name}: {excluded}")

            program = plan.values_as
            if plan.pool_program is not None and not plan.pool_with.isdisjoint(held):
                program = plan.pool_program
            cents = values[program]
            fee = plan.fee_percent if abroad else ZERO

            if ineligible:
                rate, label = ZERO, "(none: this purchase is not eligible for rewards)"
            elif option is not None and option.stacked_with is not None:
                rate, label = option.rate, self._stacked_label(plan, option)
            elif option is not None:
                rate, label = option.rate, option.rule.label
            else:
                rate, label = plan.base_rate, plan.card.base_label
            then_rate, then_label = rate, "without the bonus"
            if option is not None and option.stacked_with is not None:
                # Above the quarterly cap the everyday rule still applies, not the base rate.
                then_rate, then_label = option.stacked_with.rate, option.stacked_with.rule.label
            elif option is not None and option.cap is not None:
                then_rate = option.cap.then_rate if option.cap.then_rate is not None else plan.base_rate
            if option is not None and option.cap is not None:
                if smallest_cap is None or option.cap.amount_usd < smallest_cap:
                    smallest_cap = option.cap.amount_usd
            has_top = has_top or (option is not None and option.top)

            ranked.append(_Ranked(
                plan=plan,
                option=option,
                per_dollar=(rate * cents - fee) / HUNDRED,
                earn_per_dollar=rate / HUNDRED if plan.cash_back else rate,
                phrase=self._phrase(plan, rate, label, program, cents),
                then_per_dollar=(then_rate * cents - fee) / HUNDRED,
                then_earn_per_dollar=then_rate / HUNDRED if plan.cash_back else then_rate,
                then_phrase=self._phrase(plan, then_rate, then_label, program, cents),
                fee_applied=fee,
                assumed=option is not None and (option.top or option.rule.kind == "rotating"),
                preferred=preferred_program is not None and program_of(plan) == preferred_program,
            ))
        ranked.sort(key=_order)
        return _Ranking(tuple(ranked), tuple(passed_over), smallest_cap, has_top)

    @staticmethod
    def _stacked_label(plan: _Plan, option: _Option) -> str:
        """Label a stacked rate: "in this quarter's 5% categories (5% quarterly category stacked with 3% on dining)"."""
        unit = "%" if plan.cash_back else "x"
        everyday = option.stacked_with
        return (f"{option.rule.label} ({_number(plan.rotating.rate)}{unit} quarterly category stacked with "
                f"{_number(everyday.rate)}{unit} {everyday.rule.label})")

    def _phrase(self, plan: _Plan, rate: Decimal, label: str, program: str, cents: Decimal) -> str:
        if plan.cash_back:
            return f"{_number(rate)}% cash back {label}"
        display = self.valuations.programs[plan.card.program].display
        unit = "cent" if cents == 1 else "cents"
        return f"{_number(rate)}x {display} {label}, valued at {_cents(cents)} {unit} each"

    # -- caps and the top category -------------------------------------------

    def _value(
        self, entry: _Ranked, amount: Decimal, context: _Context, user: UserSpend | None, assume: bool
    ) -> _Valued:
        """Value one card's exact rewards on ``amount``, with the bonus cut at the cap's remaining room."""
        option = entry.option
        if option is None or option.cap is None:
            return _Valued(entry, amount * entry.per_dollar, amount * entry.earn_per_dollar, amount, "")

        cap = option.cap
        card_id = entry.plan.card.card_id
        cycle_day = user.cycle_day if user is not None else None
        period = period_key(cap.period, context.day(entry.plan), cycle_day)
        if option.top:
            return self._value_top(entry, amount, context, user, assume, period)

        spent = self._spent(user, field_name(card_id, cap.cap_id, period))
        bonus = min(amount, max(ZERO, cap.amount_usd - spent))
        return self._split(entry, amount, bonus, self._cap_note(entry, amount, bonus, spent))

    def _value_top(self, entry: _Ranked, amount: Decimal, context: _Context, user: UserSpend | None,
                   assume: bool, period: str) -> _Valued:
        """Value a top-category card by what the purchase adds to the cycle's bonus.

        Only the eligible category with the most spend earns the bonus, on up
        to the cap. So a purchase earns it on the dollars by which it raises
        the top category's spend under the cap, and the rest at the base
        rate. Summed over a cycle, these shares give exactly what the cycle
        earns, however the lead changes hands.
        """
        cap = entry.option.cap
        category = context.category
        spent = self._spent(user, field_name(entry.plan.card.card_id, f"top:{category}", period))
        leader, leader_spent = self._top_leader(entry.plan, user, category, period)
        if assume:
            leader_spent = ZERO  # no spend state: the purchase's category is assumed to be the top one
        before = min(max(spent, leader_spent), cap.amount_usd)
        after = min(max(spent + amount, leader_spent), cap.amount_usd)
        bonus = after - before
        if bonus == amount:
            return self._split(entry, amount, bonus, "")

        if spent + amount <= leader_spent:
            note = (f"{category} is not its top category this billing cycle "
                    f"({_money(spent + amount)} against {_money(leader_spent)} on {leader})")
        elif max(spent + amount, leader_spent) > cap.amount_usd or leader_spent <= spent:
            top_spent = max(spent, leader_spent)
            note = self._cap_note(entry, amount, bonus, top_spent, " in the top category")
        else:
            note = (f"{category} overtakes {leader} ({_money(leader_spent)} this billing cycle) as the top "
                    f"category, and only the top category earns the bonus, so {_money(bonus)} of the "
                    f"purchase adds to it and the other {_money(amount - bonus)} earns {entry.then_phrase}")
        return self._split(entry, amount, bonus, note)

    @staticmethod
    def _cap_note(entry: _Ranked, amount: Decimal, bonus: Decimal, spent: Decimal, where: str = "") -> str:
        """Say how much of the purchase was under the cap, or that the cap was reached; empty when all of it was."""
        cap = entry.option.cap
        rest = amount - bonus
        if not rest:
            return ""
        limit = f"the {_money(cap.amount_usd)} {_PERIOD_WORDS[cap.period]} cap"
        if not bonus:
            return f"{limit} was already reached ({_money(spent)} spent{where}), so the purchase earns {entry.then_phrase}"
        return (f"{_money(bonus)} of the purchase was under {limit} ({_money(spent)} already spent{where}), "
                f"so the other {_money(rest)} earns {entry.then_phrase}")

    @staticmethod
    def _split(entry: _Ranked, amount: Decimal, bonus: Decimal, note: str) -> _Valued:
        """Value ``bonus`` dollars of the purchase at the bonus rate and the rest at the base rate."""
        rest = amount - bonus
        cash = bonus * entry.per_dollar + rest * entry.then_per_dollar
        earned = bonus * entry.earn_per_dollar + rest * entry.then_earn_per_dollar
        return _Valued(entry, cash, earned, bonus, note)

    @staticmethod
    def _spent(user: UserSpend | None, name: str) -> Decimal:
        if user is None:
            return ZERO
        return Decimal(user.spend.get(name, 0)) / HUNDRED

    def _top_leader(self, plan: _Plan, user: UserSpend | None, category: str, period: str) -> tuple[str, Decimal]:
        """Find the other eligible category with the max spend this cycle, and that spend."""
        leader, leader_spend = "", ZERO
        if user is None or plan.top is None:
            return leader, leader_spend
        for other in plan.top.rule.categories:
            if other == category:
                continue
            spent = self._spent(user, field_name(plan.card.card_id, f"top:{other}", period))
            if spent > leader_spend:
                leader, leader_spend = other, spent
        return leader, leader_spend

    def spend_fields(self, transaction: Transaction, wallet: Sequence[str] | None, *,
                     cycle_day: int | None = None) -> list[str]:
        """List the spend-state hash fields a recommendation of ``transaction`` may read.

        The consumer collects these for a batch and loads them in one HMGET
        per user (``rewardpilot.caps.load_spend``).
        """
        card_ids = list(self._all_ids if wallet is None else self._wallet_key(wallet))
        used = self._used_card(transaction)
        if used is not None and used not in card_ids:
            card_ids.append(used)
        fields: list[str] = []
        for card_id in card_ids:
            plan = self._plans[card_id]
            day = local_date(transaction.timestamp, plan.card.time_zone)
            for cap in plan.card.caps:
                period = period_key(cap.period, day, cycle_day)
                if plan.top is not None and plan.top.cap is cap:
                    fields.extend(field_name(card_id, f"top:{c}", period) for c in plan.top.rule.categories)
                else:
                    fields.append(field_name(card_id, cap.cap_id, period))
        return fields

    def _used_card(self, transaction: Transaction) -> str | None:
        """Resolve ``transaction.card_used`` to a catalog id, or None when it names no catalog card."""
        if transaction.card_used and transaction.card_used in self.catalog:
            return self.catalog.get(transaction.card_used).card_id
        return None

    def _spend_updates(
        self, plan: _Plan, context: _Context, amount: Decimal, user: UserSpend | None
    ) -> list[tuple[str, int]]:
        """List the tallies a purchase on ``plan``'s card adds to: its capped rule's cap and its top-category tally."""
        option, _ = self._choose(plan, context.category, context.abroad, context.tags, context.rotating,
                                 context.stacked)
        cycle_day = user.cycle_day if user is not None else None
        amount_cents = to_int_cents(amount)
        updates: list[tuple[str, int]] = []
        if option is not None and option.cap is not None and not option.top:
            period = period_key(option.cap.period, context.day(plan), cycle_day)
            updates.append((field_name(plan.card.card_id, option.cap.cap_id, period), amount_cents))
        top = plan.top
        if (top is not None and top.cap is not None and context.category in top.rule.categories
                and not (top.us_only and context.abroad)):
            period = period_key(top.cap.period, context.day(plan), cycle_day)
            updates.append((field_name(plan.card.card_id, f"top:{context.category}", period), amount_cents))
        return updates

    # -- the call -----------------------------------------------------------

    def recommend_or_fallback(
        self,
        transaction: Transaction,
        wallet: Sequence[str] | None = None,
        **options,
    ) -> Recommendation:
        """Recommend like ``recommend``, but fall back to the catalog when the merchant takes no wallet card.

        A purchase at a merchant that accepts none of the wallet's cards (a
        Costco U.S. warehouse with no Visa in the wallet) still gets a
        recommendation: the best card in the catalog for it, with the reasoning
        naming the acceptance rule and ``passed_over`` listing the wallet's
        cards. That recommendation does not touch the spend state, because the user
        does not hold the card.
        """
        return self.evaluate_or_fallback(transaction, wallet, **options).to_model()

    def evaluate_or_fallback(
        self,
        transaction: Transaction,
        wallet: Sequence[str] | None = None,
        *,
        wallet_source: WalletSource | None = None,
        valuations: Mapping[str, object] | None = None,
        mode: str | None = None,
        state: SpendState | None = None,
        retired_cards: Sequence[str] = (),
    ) -> Evaluation:
        """Evaluate like ``evaluate``, with the catalog fallback of ``recommend_or_fallback``."""
        # The keywords are spelled out, not passed on as **options, because the
        # consumer calls this once per transaction and a dict of options would
        # be built and unpacked twice per call.
        try:
            return self.evaluate(transaction, wallet, wallet_source=wallet_source, valuations=valuations,
                                 mode=mode, state=state, retired_cards=retired_cards)
        except NoUsableCardError as exc:
            # The reasoning names the wallet's cards, not the catalog's, as passed over,
            # by short name like every other passed-over entry.
            note = (f"No card in this wallet is accepted at {exc.merchant} ({exc.rule_label}), "
                    "so this is the best card in the catalog for this purchase")
            passed_over = [f"{self.catalog.get(card).short_name}: not accepted here ({exc.rule_label})"
                           for card in exc.cards]
            return self.evaluate(transaction, None, valuations=valuations, mode=mode, retired_cards=retired_cards,
                                 _fallback=(note, passed_over, wallet_source or "user"))

    def recommend(
        self,
        transaction: Transaction,
        wallet: Sequence[str] | None = None,
        *,
        wallet_source: WalletSource | None = None,
        valuations: Mapping[str, object] | None = None,
        mode: str | None = None,
        state: SpendState | None = None,
        retired_cards: Sequence[str] = (),
    ) -> Recommendation:
        """The best card for ``transaction``.

        ``wallet`` is the card ids to choose from; None means the whole
        catalog ("the best card to have for this purchase"). ``wallet_source``
        says where the wallet came from: "user" (the user's own, the default
        when a wallet is given), "run" (named for the run), or "catalog"
        (required when wallet is None). ``valuations`` overrides cents per
        point by program name. ``mode`` is "cash" (default), "cashback" or
        "program:<name>". ``state`` is the spend already recorded this period;
        when given, caps, activations and the top category use it, the
        purchase is added to it, and the result's ``spend_updates`` lists the
        increments. The spend counts on ``transaction.card_used`` when it
        names a catalog card, else on the recommended card.

        ``retired_cards`` lists the cards of the user's stored wallet that
        the catalog no longer has, which the caller left out of ``wallet``.
        The reasoning names them. When the stored wallet had no other card,
        pass ``wallet=None`` (or the run's wallet with ``wallet_source="run"``),
        and the reasoning says that every stored card is retired instead of
        "No wallet on file".

        Raises UnknownCardError for a card id not in the catalog,
        NoUsableCardError when the merchant accepts no card in the wallet,
        InvalidModeError for a bad mode and ValueError for other bad
        arguments, among them a ``retired_cards`` entry the catalog has.
        """
        return self.evaluate(transaction, wallet, wallet_source=wallet_source, valuations=valuations,
                             mode=mode, state=state, retired_cards=retired_cards).to_model()

    def evaluate(
        self,
        transaction: Transaction,
        wallet: Sequence[str] | None = None,
        *,
        wallet_source: WalletSource | None = None,
        valuations: Mapping[str, object] | None = None,
        mode: str | None = None,
        state: SpendState | None = None,
        retired_cards: Sequence[str] = (),
        _fallback: tuple[str, list[str], str] | None = None,
    ) -> Evaluation:
        """Work out what ``recommend`` returns, as an ``Evaluation`` that has not built its models yet.

        Takes the same arguments and raises the same errors as ``recommend``.
        The consumer uses it to write results without building pydantic models.
        ``_fallback`` is for ``evaluate_or_fallback``: the catalog note and the
        passed-over list to use in place of the catalog's own, and the source
        of the wallet that the merchant did not accept.
        """
        started = time.perf_counter()
        if wallet is None:
            if wallet_source not in (None, "catalog"):
                raise ValueError(f"wallet_source {wallet_source!r} needs a wallet; with wallet=None it is 'catalog'")
            source: str = "catalog"
            wallet_key = None
        else:
            source = wallet_source or "user"
            if source not in _SOURCES:
                raise ValueError(f"wallet_source must be one of {_SOURCES}, got {source!r}")
            wallet_key = self._wallet_key(wallet)
        mode = DEFAULT_MODE if mode is None or mode == DEFAULT_MODE else self.check_mode(mode)
        if retired_cards:
            self._check_retired(retired_cards)
        user = state.user(transaction.user_id) if state is not None else None

        context = self._context(transaction, wallet_key, user)
        values_key = self._values_key(valuations)
        ranking = self._rank(wallet_key, context.category, context.abroad, context.tags, values_key, mode,
                             context.rotating, context.stacked, context.merchant_rule)
        if not ranking.entries:
            rule = self.catalog.merchant_rules[context.merchant_rule]
            raise NoUsableCardError(transaction.merchant, rule.label, list(wallet_key or self._all_ids))

        amount = transaction.amount_usd
        if _uncapped(ranking, amount, user):
            # Every listed card earns its full rate, so the ranking's order is the final order.
            entries = ranking.entries[: MAX_ALTERNATIVES + 1]
            cards = [_listed_uncapped(entry, amount) for entry in entries]
            cards[0].note = ""
            winner = _Valued(entries[0], ZERO, ZERO, amount, "")  # only its entry, phrase and note are read
        else:
            top = self._valued(ranking, amount, context, user)[: MAX_ALTERNATIVES + 1]
            cards = [self._listed(item, amount) for item in top]
            for listed, item in zip(cards[1:], top[1:]):
                listed.note = _describe(item)
            winner = top[0]
        winner_cash = cards[0].cash

        confidence = context.placement.confidence
        # A close call is a runner-up within a cent of the winner. In a program: mode the winner can earn
        # less than the runner-up by choice, and that is no close call.
        if len(cards) > 1 and abs(winner_cash - cards[1].cash) <= ONE_CENT:
            confidence -= CLOSE_CALL_PENALTY
        assumed = winner.entry.assumed and user is None
        if assumed:
            confidence -= ASSUMPTION_PENALTY
        confidence = round(max(MIN_CONFIDENCE, confidence), 2)

        updates: list[tuple[str, int]] = []
        if user is not None:
            used = self._used_card(transaction)
            plan = self._plans[used] if used is not None else winner.entry.plan
            updates = self._spend_updates(plan, context, amount, user)
            for name, cents in updates:
                state.add(transaction.user_id, name, cents)

        if _fallback is None:
            passed_over = list(ranking.passed_over) + self._rotating_notes(context, wallet_key)
            wallet_notes = _WALLET_NOTES[source]
            if retired_cards:
                wallet_notes = _retired_notes(source, retired_cards, "")
        else:
            fallback_note, passed_over, first_source = _fallback
            wallet_notes = (fallback_note,)
            if retired_cards:
                wallet_notes = _retired_notes(first_source, retired_cards, fallback_note)
        richer = None
        if mode != DEFAULT_MODE and len(cards) > 1:
            # Only a program: mode can rank a card above one that earns more.
            richer = max(cards[1:], key=lambda listed: listed.cash)
            richer = richer if richer.cash > winner_cash else None
        reasoning = self._reasoning(
            transaction, context, winner, winner_cash, assumed, passed_over, mode, wallet_notes, richer,
        )
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        # Positional, in field order, for the reason given in _context.
        return Evaluation(
            transaction, cards, reasoning, confidence, context.category, source, elapsed_ms,
            self.engine_version, self.catalog.version, passed_over, updates,
        )

    def rewards_for(
        self,
        transaction: Transaction,
        card_id: str,
        *,
        valuations: Mapping[str, object] | None = None,
        mode: str | None = None,
        state: SpendState | None = None,
        held: Sequence[str] | None = None,
    ) -> Rewards:
        """Compute what ``card_id`` earns on ``transaction``, whether or not the merchant accepts its network.

        ``held`` is the rest of the wallet (for pooled valuations such as
        Freedom with a Sapphire card). The state is read, not updated.
        Raises UnknownCardError for an unknown card id.
        """
        card = self.catalog.get(card_id).card_id
        wallet_key = self._wallet_key([card, *(held or ())])
        mode = DEFAULT_MODE if mode is None else self.check_mode(mode)
        user = state.user(transaction.user_id) if state is not None else None
        context = self._context(transaction, wallet_key, user)
        ranking = self._rank(wallet_key, context.category, context.abroad, context.tags,
                             self._values_key(valuations), mode, context.rotating, context.stacked, None)
        entry = next(item for item in ranking.entries if item.plan.card.card_id == card)
        valued = self._value(entry, transaction.amount_usd, context, user, user is None)
        return self._listed(valued, transaction.amount_usd).rewards()

    def _valued(self, ranking: _Ranking, amount: Decimal, context: _Context,
                user: UserSpend | None) -> list[_Valued]:
        """Value every entry on ``amount``, best first. Re-rank only when a cap or the top category can change the order."""
        entries = ranking.entries
        if _uncapped(ranking, amount, user):
            return [_Valued(e, amount * e.per_dollar, amount * e.earn_per_dollar, amount, "")
                    for e in entries[: MAX_ALTERNATIVES + 1]]
        valued = [self._value(entry, amount, context, user, user is None) for entry in entries]
        valued.sort(key=lambda v: (not v.entry.preferred, -v.cash, v.entry.plan.annual_fee, v.entry.plan.card.card_id))
        return valued

    @staticmethod
    def _listed(item: _Valued, amount: Decimal) -> Listed:
        """Round one card's exact rewards: cash value (and cash back earned) to cents, the effective rate to 4 places."""
        plan = item.entry.plan
        earned = item.earned
        if plan.cash_back:
            earned = round_cash(earned)
        cash = round_cash(item.cash) or _ZERO_CASH
        rate = (cash / amount).quantize(RATE_PLACES, ROUND_HALF_EVEN) or _ZERO_RATE
        return Listed(plan.facts, earned, cash, rate)

    def _rotating_notes(self, context: _Context, wallet_key: tuple[str, ...] | None) -> list[str]:
        """List the rotating cards whose quarter matches but earns no bonus: excluded merchant or not activated.

        An excluded merchant is named only for a wallet, as ``_choose``
        names exclusion groups.
        """
        if not context.inactive and not context.excluded:
            return []
        notes = []
        quarters = dict(context.quarters)
        if wallet_key is not None:
            for card_id, label in context.excluded:
                notes.append(self._exclusion_note(card_id, quarters[card_id], label, context.category))
        for card_id in context.inactive:
            card = self._plans[card_id].card
            notes.append(f"{card.short_name}: its {quarters[card_id]} 5% categories are not activated in this wallet")
        return notes

    def _exclusion_note(self, card_id: str, quarter_key: str, label: str, category: str) -> str:
        """Say that a quarter excludes the merchant.

        For example "Freedom Flex: purchases at Walmart and Target are
        excluded from groceries, one of its 2025Q1 5% categories".
        """
        plan = self._plans[card_id]
        quarter = next(entry for entry in plan.calendar if entry.key == quarter_key)
        if category in quarter.categories:
            where = f"{category}, one of its {quarter_key} 5% categories"
        else:
            where = f"its {quarter_key} 5% categories"
        return f"{plan.card.short_name}: purchases at {label} are excluded from {where}"

    def _reasoning(
        self, transaction: Transaction, context: _Context, winner: _Valued, cash: Decimal,
        assumed: bool, passed_over: list[str], mode: str, wallet_notes: Sequence[str], richer: Listed | None = None,
    ) -> str:
        """Write the reasoning. ``wallet_notes`` name what the purchase was judged against, when not the user's wallet.

        ``richer`` is the listed card with the highest cash value when it beats the winner's, which only a
        program: mode allows.
        """
        entry = winner.entry
        card = entry.plan.card
        placement = context.placement
        amount = transaction.amount_usd
        if context.category in self._ineligible:
            first = (
                f"Card terms exclude cash-like transactions and wagers ({placement.category}) from rewards, "
                f"so no card earns anything here; {card.short_name} is listed first because the ranking then "
                "goes by annual fee, lowest first, and then by card id."
            )
        else:
            first = f"{card.short_name} earns {winner.phrase}: {_money(cash)} on {_money(amount)}"
            if entry.fee_applied:
                first += f" after its {_number(entry.fee_applied)}% foreign transaction fee"
            first += "."

        notes: list[str] = []
        if winner.note:
            notes.append(winner.note)
        if mode == "cashback":
            notes.append("points are valued at their cash redemption value (cash back mode)")
        elif mode.startswith(PROGRAM_MODE_PREFIX) and not entry.preferred:
            notes.append(f"no card in the wallet earns {mode[len(PROGRAM_MODE_PREFIX):]}, so the highest cash value wins")
        elif mode.startswith(PROGRAM_MODE_PREFIX) and richer is not None:
            notes.append(f"it ranks first because the user's mode prefers {mode[len(PROGRAM_MODE_PREFIX):]}, "
                         f"although {self.catalog.get(richer.card.ref.card_id).short_name} would earn {_money(richer.cash - cash)} more in cash value")

        notes.extend(wallet_notes)
        if placement.source == "text":
            why = "the MCC is missing" if transaction.mcc is None else f"MCC {transaction.mcc} is not a known ISO 18245 code"
            notes.append(f"the category ({placement.category}) was inferred from the category text "
                         f"\"{transaction.category}\" because {why}")
        elif placement.source == "mcc_range":
            notes.append(f"MCC {transaction.mcc} is not in the ISO 18245 list, so its range was taken to mean "
                         f"{placement.category}")
        elif placement.source == "merchant" and self.categories.for_text(transaction.category) == OTHER:
            notes.append(f"the category ({placement.category}) was inferred from the merchant name "
                         f"\"{transaction.merchant}\" because the category text \"{transaction.category}\" "
                         "names no reward category")
        elif placement.source == "merchant":
            notes.append(f"the category ({placement.category}) was inferred from the merchant name "
                         f"\"{transaction.merchant}\" because neither an MCC nor a category text placed it")
        elif placement.source == "fallback":
            notes.append("neither the MCC nor the category text identified the purchase, so it counts as other spending")

        if assumed and entry.option is not None and entry.option.top:
            notes.append(f"this assumes {placement.category} is the card's top eligible category this billing cycle")
        elif assumed:
            notes.append("this assumes the quarter's 5% categories are activated")
        if passed_over and len(passed_over) <= 3:
            notes.append("passed over: " + "; ".join(passed_over))
        elif passed_over:
            # The full list stays in the result's passed_over field; the sentence stays short.
            notes.append(f"{len(passed_over)} cards were passed over, for example {passed_over[0]}")

        if transaction.original_amount is not None:
            notes.append(_conversion_note(transaction))
        if not notes:
            return first
        second = "; ".join(notes)
        return f"{first} {second[0].upper()}{second[1:]}."


_PERIOD_WORDS = {
    "calendar_year": "calendar-year",
    "cardmember_year": "cardmember-year",
    "calendar_quarter": "quarterly",
    "calendar_month": "monthly",
    "statement_cycle": "billing-cycle",
}


def program_of(plan: _Plan) -> str:
    return plan.card.program


def _uncapped(ranking: _Ranking, amount: Decimal, user: UserSpend | None) -> bool:
    """Return True when no cap or top category can cut a card's rate on ``amount``: no spend state and no cap below it."""
    return user is None and (ranking.smallest_cap is None or amount <= ranking.smallest_cap)


def _listed_uncapped(entry: _Ranked, amount: Decimal) -> Listed:
    """List a card that earns its full rate on ``amount``, rounded as ``RulesEngine._listed`` rounds.

    The note is the card's phrase, as ``_describe`` writes it for an
    alternative; the caller clears it for the recommended card.
    """
    plan = entry.plan
    # round_cash written out, since this runs for four cards of every purchase.
    cash = (amount * entry.per_dollar).quantize(CENT, CASH_ROUNDING) or _ZERO_CASH
    earned = amount * entry.earn_per_dollar
    if plan.cash_back:
        earned = earned.quantize(CENT, CASH_ROUNDING)
    rate = (cash / amount).quantize(RATE_PLACES, ROUND_HALF_EVEN) or _ZERO_RATE
    note = entry.phrase if amount else entry.then_phrase
    if entry.fee_applied:
        note = _after_fee(note, entry.fee_applied)
    return Listed(plan.facts, earned, cash, rate, note)


def _order(entry: _Ranked) -> tuple:
    return (not entry.preferred, -entry.per_dollar, entry.plan.annual_fee, entry.plan.card.card_id)


def _describe(item: _Valued) -> str:
    """Write an alternative's note: its rate, the foreign fee it pays, and any cap or assumption note."""
    phrase = item.phrase
    if item.entry.fee_applied:
        phrase = _after_fee(phrase, item.entry.fee_applied)
    if item.note:
        return f"{phrase}; {item.note}"
    return phrase


def _after_fee(phrase: str, fee: Decimal) -> str:
    """Add the foreign transaction fee that a card's cash value already has taken off."""
    return f"{phrase}, after its {_number(fee)}% foreign transaction fee"


def _number(value: Decimal) -> str:
    """4 -> "4", 1.50 -> "1.5", 2.7 -> "2.7"."""
    text = format(value.normalize(), "f")
    return text


def _cents(value: Decimal) -> str:
    """Cents per point with at least one decimal: 2 -> "2.0", 2.05 -> "2.05"."""
    text = format(value.normalize(), "f")
    return text if "." in text else f"{text}.0"


def _money(value: Decimal) -> str:
    """12.5 -> "$12.50", 1234.5 -> "$1,234.50", -3 -> "-$3.00", and -0.00 or -0.001 -> "$0.00"."""
    if 0 <= value < _THOUSAND:
        # Amounts and rounded cash values already have two places, and
        # str() writes them as format() would, in a third of the time.
        # A negative zero passes the test above, and str() keeps its sign.
        text = str(value)
        if text[-3:-2] == "." and text[0] != "-":
            return "$" + text
    text = f"{abs(value):,.2f}"
    return f"-${text}" if value < 0 and text != "0.00" else f"${text}"


def _conversion_note(transaction: Transaction) -> str:
    """Describe a conversion: "the amount is 5.50 AUD converted to $4.12 at 0.75 USD per AUD (rate of 2017-05-01)"."""
    currency = transaction.original_currency
    note = (f"the amount is {transaction.original_amount} {currency} converted to {_money(transaction.amount_usd)} "
            f"at {_number(transaction.usd_per_unit)} USD per {currency}")
    if transaction.rate_date is not None:
        note += f" (rate of {transaction.rate_date.isoformat()})"
    return note


def _retired_notes(source: str, retired_cards: Sequence[str], fallback_note: str) -> list[str]:
    """Say which stored cards the catalog no longer has, what the purchase was judged against, and the fix.

    ``source`` is that of the wallet judged first: "user" when the stored
    wallet kept other cards. ``fallback_note`` is the note of
    ``evaluate_or_fallback`` when the merchant accepted no card of that
    wallet, else empty.
    """
    names = ", ".join(retired_cards)
    retired = f"every card in the stored wallet is retired from the catalog ({names})"
    notes = [fallback_note] if fallback_note else []
    if source == "user":
        verb = "is" if len(retired_cards) == 1 else "are"
        notes.append(f"the stored wallet's {names} {verb} retired from the catalog and left out")
    elif fallback_note:
        notes.append(retired)
    elif source == "run":
        notes.append(f"{retired}, so this is the best card in the wallet named for this run")
    else:
        notes.append(f"{retired}, so this is the best card in the catalog for this purchase")
    notes.append(UPDATE_WALLET_NOTE)
    return notes


@cache
def _default_engine() -> RulesEngine:
    return RulesEngine(default_catalog(), default_valuations(), default_categories())
