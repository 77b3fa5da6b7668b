"""A recommendation as the engine computes it, before it becomes a pydantic model.

``RulesEngine.evaluate`` returns an ``Evaluation``: plain slotted objects
holding the same facts as a ``Recommendation``. The consumer writes it to
the results stream with ``to_json`` and never builds the eight pydantic
models of a recommendation (the result, its rewards, three alternatives and
their rewards). The JSON is the same document ``Recommendation.model_dump_json``
writes: the same keys in the same order, decimals as strings and UTC times
ending in ``Z``. ``to_model`` builds the ``Recommendation`` for callers that
want one; ``RulesEngine.recommend`` is ``evaluate(...).to_model()``.

tests/test_evaluation.py checks, for many transactions, wallets and spend
states, that ``Recommendation.model_validate_json(evaluation.to_json())``
equals ``evaluation.to_model()`` and that both JSON documents parse to the
same object.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import orjson

from rewardpilot.engine._construct import builder
from rewardpilot.models import Alternative, CardRef, Recommendation, Rewards, Transaction

_build_recommendation = builder(Recommendation)
_build_rewards = builder(Rewards)
_build_alternative = builder(Alternative)


@dataclass(frozen=True, slots=True)
class CardFacts:
    """The parts of a result that depend only on the card: its reference (also serialized), unit and program."""

    ref: CardRef
    ref_json: orjson.Fragment
    unit: str
    program: str

    @classmethod
    def of(cls, ref: CardRef, unit: str, program: str) -> CardFacts:
        document = {"card_id": ref.card_id, "name": ref.name, "issuer": ref.issuer}
        return cls(ref, orjson.Fragment(orjson.dumps(document)), unit, program)


@dataclass(slots=True)
class Listed:
    """One card of a result, the recommended one or an alternative, with its rewards on the purchase."""

    card: CardFacts
    earned: Decimal      # in the card's unit: points, miles, or USD for cash back
    cash: Decimal        # cash value in USD, rounded to cents
    rate: Decimal        # effective rate: cash / amount, four places
    note: str = ""       # why it ranked where it did; empty for the recommended card

    def rewards(self) -> Rewards:
        return _build_rewards(amount=self.earned, unit=self.card.unit, program=self.card.program,
                              cash_value_usd=self.cash, effective_rate=self.rate)

    def rewards_document(self) -> dict:
        return {
            "amount": str(self.earned),
            "unit": self.card.unit,
            "program": self.card.program,
            "cash_value_usd": str(self.cash),
            "effective_rate": str(self.rate),
        }


@dataclass(slots=True)
class Evaluation:
    """The best card for one transaction and its runners-up, plus what the consumer stamps on a result.

    ``cards[0]`` is the recommended card and the rest are the alternatives.
    The consumer sets ``entry_id``, ``run``, ``recommender``,
    ``published_at`` and ``completed_at`` before it writes the result.
    """

    transaction: Transaction
    cards: list[Listed]
    reasoning: str
    confidence: float
    category: str
    wallet_source: str
    processing_time_ms: float
    engine_version: str
    catalog_version: str
    passed_over: list[str]
    spend_updates: list[tuple[str, int]]
    entry_id: str | None = None
    run: str = "live"
    recommender: str = "in-process"
    published_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def transaction_id(self) -> str:
        return self.transaction.transaction_id

    @property
    def user_id(self) -> str:
        return self.transaction.user_id

    @property
    def cash_value_usd(self) -> Decimal:
        return self.cards[0].cash

    def to_model(self) -> Recommendation:
        """Build the ``Recommendation`` model, without validating again what the engine computed."""
        transaction = self.transaction
        winner = self.cards[0]
        return _build_recommendation(
            transaction_id=transaction.transaction_id,
            user_id=transaction.user_id,
            recommended_card=winner.card.ref,
            rewards=winner.rewards(),
            alternatives=[
                _build_alternative(card=listed.card.ref, rewards=listed.rewards(), note=listed.note)
                for listed in self.cards[1:]
            ],
            reasoning=self.reasoning,
            confidence=self.confidence,
            category=self.category,
            wallet_source=self.wallet_source,
            amount_usd=transaction.amount_usd,
            processing_time_ms=self.processing_time_ms,
            engine_version=self.engine_version,
            catalog_version=self.catalog_version,
            entry_id=self.entry_id,
            run=self.run,
            recommender=self.recommender,
            published_at=self.published_at,
            completed_at=self.completed_at,
            passed_over=self.passed_over,
            spend_updates=self.spend_updates,
            timestamp=transaction.timestamp,
            card_used=transaction.card_used,
            merchant=transaction.merchant,
        )

    def to_json(self) -> bytes:
        """Serialize to the document ``to_model().model_dump_json()`` gives, without building the models."""
        transaction = self.transaction
        winner = self.cards[0]
        return orjson.dumps({
            "transaction_id": transaction.transaction_id,
            "user_id": transaction.user_id,
            "recommended_card": winner.card.ref_json,
            "rewards": winner.rewards_document(),
            "alternatives": [
                {"card": listed.card.ref_json, "rewards": listed.rewards_document(), "note": listed.note}
                for listed in self.cards[1:]
            ],
            "reasoning": self.reasoning,
            "confidence": self.confidence,
            "category": self.category,
            "wallet_source": self.wallet_source,
            "amount_usd": str(transaction.amount_usd),
            "processing_time_ms": self.processing_time_ms,
            "engine_version": self.engine_version,
            "catalog_version": self.catalog_version,
            "entry_id": self.entry_id,
            "run": self.run,
            "recommender": self.recommender,
            "published_at": self.published_at,
            "completed_at": self.completed_at,
            "passed_over": self.passed_over,
            "spend_updates": self.spend_updates,
            "timestamp": transaction.timestamp,
            "card_used": transaction.card_used,
            "merchant": transaction.merchant,
        }, option=orjson.OPT_UTC_Z)

