"""The rules engine: the best card in a wallet (or the catalog) for one purchase.

How a card's value on a purchase is worked out:

* The purchase is placed in a category (``categories.py``).
* Each card's best applicable rule for that category gives its rate: a
  ``category`` rule applies unless it is U.S.-only and the purchase is
  abroad, or the merchant is in one of its exclusion groups; a
  ``top_category`` rule (Citi Custom Cash) is applied on the assumption that
  the category is the card's top one this cycle; ``rotating`` and
  booking-channel rules are skipped (this version keeps no quarter calendar
  or spend history, and a card transaction does not say how it was booked).
  No rule means the base rate; cash-like transactions and wagers earn nothing.
* Earned = amount x rate (points or miles), or amount x rate% for cash back.
* Cash value = amount x (rate x cents per point - foreign fee %) / 100,
  rounded to cents half-even (``money.round_cash``). The foreign fee applies
  when the currency is not USD or the merchant country is set and not US.
  Points of a card whose ``pooled_valuation`` partner is in the same wallet
  are valued at the partner program's rate (Freedom + Sapphire).
* Effective rate = cash value / amount, as a fraction (0.08 = 8%) with four
  decimal places, half-even.
* Cards are ranked by exact cash value per dollar, then lower annual fee,
  then card_id; the first is recommended and the next three are the
  alternatives.

Confidence starts from how the category was found (0.95 by MCC, 0.75 by
category text, 0.60 by MCC range, 0.50 for "other" by default), then drops
0.10 when the top two cards are within a cent of each other and 0.10 when
the winning rule rests on an assumption (a top-category bonus), never
below 0.05.

Rankings do not depend on the amount, so they are cached per (wallet,
category, abroad, exclusion tags, valuations); a recommendation then costs a
few Decimal multiplications and building the result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cache, lru_cache
from typing import Mapping, Sequence

from rewardpilot import ENGINE_VERSION
from rewardpilot.engine._construct import builder
from rewardpilot.engine.catalog import Card, Catalog, EarnRule, default_catalog
from rewardpilot.engine.categories import CategoryMap, Placement, default_categories, normalize_text
from rewardpilot.engine.valuations import ValuationTable, default_valuations, parse_cents
from rewardpilot.models import Alternative, CardRef, Recommendation, Rewards, Transaction, WalletSource
from rewardpilot.money import ZERO, round_cash

HUNDRED = Decimal(100)
RATE_PLACES = Decimal("0.0001")
ONE_CENT = Decimal("0.01")
MAX_ALTERNATIVES = 3
CLOSE_CALL_PENALTY = 0.10
ASSUMPTION_PENALTY = 0.10
MIN_CONFIDENCE = 0.05
_CACHE_SIZE = 65536

_SOURCES = ("user", "run", "catalog")

_build_recommendation = builder(Recommendation)
_build_rewards = builder(Rewards)
_build_alternative = builder(Alternative)


@dataclass(frozen=True, slots=True)
class _Option:
    """A bonus rule of one card, ready to test against a purchase."""

    rule: EarnRule
    rate: Decimal
    us_only: bool
    excludes: frozenset[str]
    assumed: bool


@dataclass(frozen=True, slots=True)
class _Plan:
    """One card, precomputed for ranking."""

    card: Card
    ref: CardRef
    annual_fee: Decimal
    fee_percent: Decimal
    base_rate: Decimal
    options: dict[str, tuple[_Option, ...]]
    values_as: str
    pool_program: str | None
    pool_with: frozenset[str]
    cash_back: bool


@dataclass(frozen=True, slots=True)
class _Ranked:
    """One card's standing for a (category, abroad, tags, valuations) situation."""

    plan: _Plan
    per_dollar: Decimal        # cash value per dollar spent, USD
    earn_per_dollar: Decimal   # earned units per dollar (points, miles or USD)
    phrase: str                # "4x Membership Rewards points at U.S. supermarkets, valued at 2.0 cents each"
    fee_applied: Decimal       # foreign fee percent charged, 0 at home
    assumed: bool


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
        self._plans: dict[str, _Plan] = {card.card_id: self._plan(card) for card in catalog.cards}
        self._all_ids: tuple[str, ...] = tuple(sorted(self._plans))
        self._exclusion_categories = frozenset(
            category
            for plan in self._plans.values()
            for category, options in plan.options.items()
            if any(option.excludes for option in options)
        )
        self._default_values = valuations.defaults()
        self._values_cache: dict[tuple, dict[str, Decimal]] = {(): self._default_values}
        self._wallets: dict[tuple, tuple[str, ...]] = {}
        self._rank = lru_cache(maxsize=_CACHE_SIZE)(self._rank_uncached)
        self._merchant_tags = lru_cache(maxsize=_CACHE_SIZE)(self._merchant_tags_uncached)

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
                if unknown:
                    raise ValueError(f"{card.card_id}: rule {rule.rule_id} names unknown categories {unknown}")
            wanted = [card.program, card.values_as]
            if card.pooled_valuation:
                wanted.append(card.pooled_valuation.program)
            missing = [p for p in wanted if p not in programs]
            if missing:
                raise ValueError(f"{card.card_id}: no valuation for program(s) {missing}")

    def _plan(self, card: Card) -> _Plan:
        options: dict[str, list[_Option]] = {}
        for rule in card.earn:
            if rule.channel is not None or rule.kind == "rotating":
                continue  # not knowable from a card transaction in this version
            option = _Option(
                rule=rule, rate=rule.rate, us_only=rule.us_only,
                excludes=frozenset(rule.excludes), assumed=rule.kind == "top_category",
            )
            for category in rule.categories:
                options.setdefault(category, []).append(option)
        ordered = {
            category: tuple(sorted(found, key=lambda o: (-o.rate, o.assumed, o.rule.rule_id)))
            for category, found in options.items()
        }
        pooled = card.pooled_valuation
        return _Plan(
            card=card,
            ref=CardRef(card_id=card.card_id, name=card.name, issuer=card.issuer),
            annual_fee=card.annual_fee_usd,
            fee_percent=card.foreign_transaction_fee_percent,
            base_rate=card.base_rate,
            options=ordered,
            values_as=card.values_as,
            pool_program=pooled.program if pooled else None,
            pool_with=frozenset(pooled.with_cards) if pooled else frozenset(),
            cash_back=card.unit == "USD",
        )

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

    def _merchant_tags_uncached(self, merchant: str) -> frozenset[str]:
        padded = f" {normalize_text(merchant)} "
        return frozenset(
            name for name, (_, needles) in self._groups.items() if any(needle in padded for needle in needles)
        )

    def _tags(self, transaction: Transaction, category: str) -> frozenset[str]:
        if category not in self._exclusion_categories:
            return frozenset()
        tags = self._merchant_tags(transaction.merchant)
        if transaction.mcc is not None:
            by_mcc = [name for name, (codes, _) in self._groups.items() if transaction.mcc in codes]
            if by_mcc:
                tags = tags | frozenset(by_mcc)
        return tags

    # -- ranking ------------------------------------------------------------

    def _rank_uncached(
        self, wallet_key: tuple[str, ...] | None, category: str, abroad: bool,
        tags: frozenset[str], values_key: tuple,
    ) -> tuple[_Ranked, ...]:
        values = self._values_cache.get(values_key) or self.valuations.merged(dict(values_key))
        ids = self._all_ids if wallet_key is None else wallet_key
        held = frozenset(wallet_key) if wallet_key is not None else frozenset()
        ineligible = category in self._ineligible
        ranked: list[_Ranked] = []
        for card_id in ids:
            plan = self._plans[card_id]
            option: _Option | None = None
            if not ineligible:
                for candidate in plan.options.get(category, ()):
                    if candidate.us_only and abroad:
                        continue
                    if candidate.excludes and not candidate.excludes.isdisjoint(tags):
                        continue
                    option = candidate
                    break
            if ineligible:
                rate, label = ZERO, "(none: this purchase is not eligible for rewards)"
            elif option is not None:
                rate, label = option.rate, option.rule.label
            else:
                rate, label = plan.base_rate, plan.card.base_label
            program = plan.values_as
            if plan.pool_program is not None and not plan.pool_with.isdisjoint(held):
                program = plan.pool_program
            cents = values[program]
            fee = plan.fee_percent if abroad else ZERO
            ranked.append(_Ranked(
                plan=plan,
                per_dollar=(rate * cents - fee) / HUNDRED,
                earn_per_dollar=rate / HUNDRED if plan.cash_back else rate,
                phrase=self._phrase(plan, rate, label, program, cents),
                fee_applied=fee,
                assumed=option is not None and option.assumed,
            ))
        ranked.sort(key=lambda r: (-r.per_dollar, r.plan.annual_fee, r.plan.card.card_id))
        return tuple(ranked)

    def _phrase(self, plan: _Plan, rate: Decimal, label: str, program: str, cents: Decimal) -> str:
        if plan.cash_back:
            return f"{_number(rate)}% cash back {label}"
        display = self.valuations.programs[plan.card.program].display
        unit = "cent" if cents == 1 else "cents"
        return f"{_number(rate)}x {display} {label}, valued at {_cents(cents)} {unit} each"

    # -- the call -----------------------------------------------------------

    def recommend(
        self,
        transaction: Transaction,
        wallet: Sequence[str] | None = None,
        *,
        wallet_source: WalletSource | None = None,
        valuations: Mapping[str, object] | None = None,
    ) -> Recommendation:
        """The best card for ``transaction``.

        ``wallet`` is the card ids to choose from; None means the whole
        catalog ("the best card to have for this purchase"). ``wallet_source``
        says where the wallet came from: "user" (the user's own, the default
        when a wallet is given), "run" (named for the run), or "catalog"
        (required when wallet is None). ``valuations`` overrides cents per
        point by program name. Raises UnknownCardError for a card id not in
        the catalog and ValueError for other bad arguments.
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

        placement = self.categories.place(transaction.mcc, transaction.category)
        category = placement.category
        country = transaction.merchant_country
        abroad = transaction.currency != "USD" or (country is not None and country != "US")
        tags = self._tags(transaction, category)
        values_key = self._values_key(valuations)
        ranked = self._rank(wallet_key, category, abroad, tags, values_key)

        amount = transaction.amount_usd
        top = ranked[: MAX_ALTERNATIVES + 1]
        rewards = [self._rewards(entry, amount) for entry in top]
        winner, winner_rewards = top[0], rewards[0]

        confidence = placement.confidence
        if len(rewards) > 1 and winner_rewards.cash_value_usd - rewards[1].cash_value_usd <= ONE_CENT:
            confidence -= CLOSE_CALL_PENALTY
        if winner.assumed:
            confidence -= ASSUMPTION_PENALTY
        confidence = round(max(MIN_CONFIDENCE, confidence), 2)

        alternatives = [
            _build_alternative(card=entry.plan.ref, rewards=entry_rewards, note=entry.phrase)
            for entry, entry_rewards in zip(top[1:], rewards[1:])
        ]
        reasoning = self._reasoning(
            transaction, placement, winner, winner_rewards, source, category in self._ineligible
        )
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        return _build_recommendation(
            transaction_id=transaction.transaction_id,
            user_id=transaction.user_id,
            recommended_card=winner.plan.ref,
            rewards=winner_rewards,
            alternatives=alternatives,
            reasoning=reasoning,
            confidence=confidence,
            category=category,
            wallet_source=source,
            amount_usd=amount,
            processing_time_ms=elapsed_ms,
            engine_version=self.engine_version,
            catalog_version=self.catalog.version,
        )

    @staticmethod
    def _rewards(entry: _Ranked, amount: Decimal) -> Rewards:
        plan = entry.plan
        earned = amount * entry.earn_per_dollar
        if plan.cash_back:
            earned = round_cash(earned)
        cash = round_cash(amount * entry.per_dollar)
        return _build_rewards(
            amount=earned,
            unit=plan.card.unit,
            program=plan.card.program,
            cash_value_usd=cash,
            effective_rate=(cash / amount).quantize(RATE_PLACES, rounding=ROUND_HALF_EVEN),
        )

    def _reasoning(
        self, transaction: Transaction, placement: Placement, winner: _Ranked,
        rewards: Rewards, source: str, ineligible: bool,
    ) -> str:
        card = winner.plan.card
        amount = transaction.amount_usd
        if ineligible:
            first = (
                f"Card terms exclude cash-like transactions and wagers ({placement.category}) from rewards, "
                f"so no card earns anything here; {card.short_name} is listed first for its lower annual fee."
            )
        else:
            first = f"{card.short_name} earns {winner.phrase}: {_money(rewards.cash_value_usd)} on {_money(amount)}"
            if winner.fee_applied:
                first += f" after its {_number(winner.fee_applied)}% foreign transaction fee"
            first += "."
        notes: list[str] = []
        if source == "catalog":
            notes.append("No wallet on file for this user, so this is the best card in the catalog for this purchase")
        elif source == "run":
            notes.append("No wallet on file for this user, so this is the best card in the wallet named for this run")
        if placement.source == "text":
            why = "the MCC is missing" if transaction.mcc is None else f"MCC {transaction.mcc} is not a known ISO 18245 code"
            notes.append(f"the category ({placement.category}) was inferred from the category text "
                         f"\"{transaction.category}\" because {why}")
        elif placement.source == "mcc_range":
            notes.append(f"MCC {transaction.mcc} is not in the ISO 18245 list, so its range was taken to mean "
                         f"{placement.category}")
        elif placement.source == "fallback":
            notes.append("neither the MCC nor the category text identified the purchase, so it counts as other spending")
        if winner.assumed:
            notes.append(f"this assumes {placement.category} is the card's top eligible category this billing cycle")
        if not notes:
            return first
        second = "; ".join(notes)
        return f"{first} {second[0].upper()}{second[1:]}."


def _number(value: Decimal) -> str:
    """4 -> "4", 1.50 -> "1.5", 2.7 -> "2.7"."""
    text = format(value.normalize(), "f")
    return text


def _cents(value: Decimal) -> str:
    """Cents per point with at least one decimal: 2 -> "2.0", 2.05 -> "2.05"."""
    text = format(value.normalize(), "f")
    return text if "." in text else f"{text}.0"


def _money(value: Decimal) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


@cache
def _default_engine() -> RulesEngine:
    return RulesEngine(default_catalog(), default_valuations(), default_categories())
