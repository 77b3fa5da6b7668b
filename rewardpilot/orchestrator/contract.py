"""The orchestrator's REST contract: request and response bodies of ``/recommend``.

The documented RewardPilot orchestrator contract is: a request with
``user_id, merchant, category, amount_usd, mcc`` (``transaction_id`` and
``timestamp`` optional), and a response with ``recommended_card {card_id,
card_name}``, ``rewards {points, cash_value}``, ``confidence``, ``reasoning``
and ``alternatives``. Everything else here is an extension. In the request
these are ``wallet``, ``wallet_source`` and the purchase facts of
``purchase_facts`` (currency, merchant country, card used, conversion). In
the response they are ``issuer``, ``unit``, ``program``, ``effective_rate``,
``passed_over`` and the version fields. Clients parse the extensions as
optional, so an orchestrator that sends only the documented fields still
parses, and servers ignore request fields they do not know.

Amounts travel as JSON numbers. The server writes whole-cent Decimals, and
clients read them back with ``json.loads(..., parse_float=Decimal)`` so no
binary float rounding enters the money path. docs/orchestrator-contract.md
describes the contract for someone writing their own orchestrator.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from rewardpilot.engine._construct import builder
from rewardpilot.engine.evaluation import Evaluation, Listed
from rewardpilot.engine.rules import RATE_PLACES
from rewardpilot.models import (
    MAX_ID_LENGTH,
    Alternative,
    CardRef,
    Recommendation,
    Rewards,
    Transaction,
    WalletSource,
)
from rewardpilot.money import CASH_ROUNDING, round_cash

MAX_WALLET_CARDS = 64
MAX_BATCH_ITEMS = 1000

# Decimal in Python, a JSON number on the wire (pydantic would write a string).
Amount = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]

CardId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class RecommendRequest(Transaction):
    """One transaction to recommend a card for: the body of ``POST /recommend``.

    It validates exactly like a stream ``Transaction`` (the same messages for
    a bad amount, MCC or timestamp), except that ``transaction_id`` is
    optional. So it takes the purchase facts too (``currency``,
    ``merchant_country``, ``card_used`` and the conversion fields), and a
    foreign purchase is judged as the in-process engine judges it. Other
    unknown fields are ignored. ``wallet`` lists the card ids to judge
    against. Without it the server uses the user's wallet stored in Redis,
    or the whole catalog.
    ``wallet_source`` names where a given ``wallet`` came from: "user" (the
    caller read the user's own wallet) or "run" (the default: a wallet named
    for the run), so the reasoning describes it correctly. Cards of a "user"
    wallet that the catalog lacks are left out, as for a stored wallet,
    while an unknown card in a "run" wallet makes the request invalid (422).
    """

    transaction_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)] | None = None
    wallet: Annotated[list[CardId], Field(min_length=1, max_length=MAX_WALLET_CARDS)] | None = None
    wallet_source: Literal["user", "run"] | None = None

    def to_transaction(self) -> Transaction:
        """Build the engine's Transaction, giving one without an id a fresh ``orch-`` id."""
        fields = self.model_dump(exclude={"wallet", "wallet_source"})
        fields["transaction_id"] = self.transaction_id or f"orch-{uuid.uuid4().hex}"
        return Transaction.model_validate(fields)


# The Transaction fields that purchase_facts writes, in request order. The
# rules engine reads currency and merchant_country to tell a foreign purchase
# (no U.S.-only bonus, plus the card's foreign transaction fee), card_used for
# the cap a purchase fills, and the conversion fields for the reasoning.
PURCHASE_FACT_FIELDS = (
    "currency", "merchant_country", "card_used",
    "original_amount", "original_currency", "usd_per_unit", "rate_date",
)


def purchase_facts(transaction: Transaction) -> dict[str, str]:
    """Write a transaction's currency, merchant country, card used and conversion as request fields.

    ``currency`` is always written and the others only when set. Decimals
    go as exact strings (``"100.00"``, not 100.0) and ``rate_date`` as
    YYYY-MM-DD, so the orchestrator's reasoning quotes the amount as read.
    """
    facts: dict[str, str] = {}
    for name in PURCHASE_FACT_FIELDS:
        value = getattr(transaction, name)
        if value is None:
            continue
        facts[name] = value.isoformat() if isinstance(value, date) else str(value)
    return facts


class CardOut(BaseModel):
    """A card as the contract names it."""

    card_id: str
    card_name: str
    issuer: str = ""


class RewardsOut(BaseModel):
    """What a card earns on the purchase: ``points`` in ``unit``, ``cash_value`` in USD."""

    points: Amount
    cash_value: Amount
    unit: str = "points"
    program: str = ""
    effective_rate: Amount | None = None


class AlternativeOut(BaseModel):
    """A runner-up card with what it would have earned."""

    card_id: str
    card_name: str
    issuer: str = ""
    rewards: RewardsOut
    note: str = ""


class RecommendResponse(BaseModel):
    """The body of a ``POST /recommend`` answer."""

    model_config = ConfigDict(extra="ignore")

    transaction_id: str | None = None
    user_id: str | None = None
    recommended_card: CardOut
    rewards: RewardsOut
    confidence: Annotated[float, Field(ge=0.0, le=1.0)]
    reasoning: str
    alternatives: list[AlternativeOut] = []
    category: str | None = None
    wallet_source: WalletSource | None = None
    amount_usd: Amount | None = None
    catalog_version: str | None = None
    engine_version: str | None = None
    processing_time_ms: float | None = None
    passed_over: list[str] = []

    @classmethod
    def from_evaluation(cls, evaluation: Evaluation) -> RecommendResponse:
        """Write the engine's Evaluation in the contract's terms, without validating what the engine computed.

        Gives the same response as ``from_recommendation(evaluation.to_model())``
        (tests/test_orchestrator_api.py checks this) at a fraction of the cost.
        """
        transaction = evaluation.transaction
        winner = evaluation.cards[0]
        return _build_response(
            transaction_id=transaction.transaction_id,
            user_id=transaction.user_id,
            recommended_card=_build_card(card_id=winner.card.ref.card_id, card_name=winner.card.ref.name,
                                         issuer=winner.card.ref.issuer),
            rewards=_listed_rewards(winner),
            confidence=evaluation.confidence,
            reasoning=evaluation.reasoning,
            alternatives=[
                _build_alternative(card_id=listed.card.ref.card_id, card_name=listed.card.ref.name,
                                   issuer=listed.card.ref.issuer, rewards=_listed_rewards(listed), note=listed.note)
                for listed in evaluation.cards[1:]
            ],
            category=evaluation.category,
            wallet_source=evaluation.wallet_source,
            amount_usd=transaction.amount_usd,
            catalog_version=evaluation.catalog_version,
            engine_version=evaluation.engine_version,
            processing_time_ms=evaluation.processing_time_ms,
            passed_over=evaluation.passed_over,
        )

    @classmethod
    def from_recommendation(cls, recommendation: Recommendation) -> RecommendResponse:
        """Write an engine Recommendation in the contract's terms."""
        return cls(
            transaction_id=recommendation.transaction_id,
            user_id=recommendation.user_id,
            recommended_card=_card_out(recommendation.recommended_card),
            rewards=_rewards_out(recommendation.rewards),
            confidence=recommendation.confidence,
            reasoning=recommendation.reasoning,
            alternatives=[
                AlternativeOut(
                    card_id=alternative.card.card_id,
                    card_name=alternative.card.name,
                    issuer=alternative.card.issuer,
                    rewards=_rewards_out(alternative.rewards),
                    note=alternative.note,
                )
                for alternative in recommendation.alternatives
            ],
            category=recommendation.category,
            wallet_source=recommendation.wallet_source,
            amount_usd=recommendation.amount_usd,
            catalog_version=recommendation.catalog_version,
            engine_version=recommendation.engine_version,
            processing_time_ms=recommendation.processing_time_ms,
            passed_over=recommendation.passed_over,
        )

    def to_recommendation(
        self,
        transaction: Transaction,
        *,
        wallet_source: WalletSource | None,
        recommender: str,
    ) -> Recommendation:
        """Build the pipeline's Recommendation for ``transaction`` from this answer.

        Raises ``EchoMismatchError`` (a ValueError) when the response echoes a
        ``transaction_id``, ``user_id`` or ``amount_usd`` that differs from
        the transaction's, because then it belongs to another transaction. The
        transaction's time, merchant and ``card_used`` are copied as the
        in-process engine copies them. ``wallet_source`` set by the caller
        wins over the response's, unless the response's is "catalog": then
        the orchestrator fell back to the whole catalog, as the engine does
        when no card of the wallet is accepted. Cash values are rounded to
        cents and rates to four places, half even, as the engine rounds
        them. A field the contract does not carry gets a stated default:
        ``unknown`` for the versions, the request's category, and an
        effective rate of the rounded cash value over the amount.
        """
        mismatches = self.echo_mismatches(transaction)
        if mismatches:
            raise EchoMismatchError(
                f"the response for transaction_id {transaction.transaction_id!r} echoes {' and '.join(mismatches)}, "
                "so it belongs to another transaction. Answer each transaction in request order, echoing its "
                "transaction_id, user_id and amount_usd or leaving them out"
            )

        amount = transaction.amount_usd
        alternatives = [
            Alternative(
                card=CardRef(card_id=alternative.card_id, name=alternative.card_name, issuer=alternative.issuer or "unknown"),
                rewards=_rewards_in(alternative.rewards, amount),
                note=alternative.note,
            )
            for alternative in self.alternatives[:3]  # Recommendation keeps at most 3 runners-up
        ]
        return Recommendation(
            transaction_id=transaction.transaction_id,
            user_id=transaction.user_id,
            recommended_card=CardRef(
                card_id=self.recommended_card.card_id,
                name=self.recommended_card.card_name,
                issuer=self.recommended_card.issuer or "unknown",
            ),
            rewards=_rewards_in(self.rewards, amount),
            alternatives=alternatives,
            reasoning=self.reasoning,
            confidence=self.confidence,
            category=self.category or transaction.category,
            wallet_source=_result_wallet_source(wallet_source, self.wallet_source),
            amount_usd=amount,
            processing_time_ms=self.processing_time_ms or 0.0,
            engine_version=self.engine_version or "unknown",
            catalog_version=self.catalog_version or "unknown",
            recommender=recommender,
            passed_over=self.passed_over,
            timestamp=transaction.timestamp,
            card_used=transaction.card_used,
            merchant=transaction.merchant,
        )

    def echo_mismatches(self, transaction: Transaction) -> list[str]:
        """Name each echoed field that differs from ``transaction``'s, with the echoed value.

        An omitted or null echo matches. ``amount_usd`` is compared as a
        number, so 17.2 matches 17.20.
        """
        mismatches = []
        if self.transaction_id is not None and self.transaction_id != transaction.transaction_id:
            mismatches.append(f"transaction_id {self.transaction_id!r}")
        if self.user_id is not None and self.user_id != transaction.user_id:
            mismatches.append(f"user_id {self.user_id!r} (the transaction's is {transaction.user_id!r})")
        if self.amount_usd is not None and self.amount_usd != transaction.amount_usd:
            mismatches.append(f"amount_usd {self.amount_usd} (the transaction's is {transaction.amount_usd})")
        return mismatches


def _result_wallet_source(sent: WalletSource | None, answered: WalletSource | None) -> WalletSource:
    """Return the result's wallet source: "catalog" when the response names it, else the one sent."""
    if answered == "catalog":
        return "catalog"
    return sent or answered or "catalog"


class EchoMismatchError(ValueError):
    """A response that echoes a transaction_id, user_id or amount_usd other than its request's."""


_build_response = builder(RecommendResponse)
_build_card = builder(CardOut)
_build_rewards = builder(RewardsOut)
_build_alternative = builder(AlternativeOut)


def _listed_rewards(listed: Listed) -> RewardsOut:
    return _build_rewards(points=listed.earned, cash_value=listed.cash, unit=listed.card.unit,
                          program=listed.card.program, effective_rate=listed.rate)


def _card_out(card: CardRef) -> CardOut:
    return CardOut(card_id=card.card_id, card_name=card.name, issuer=card.issuer)


def _rewards_out(rewards: Rewards) -> RewardsOut:
    return RewardsOut(
        points=rewards.amount,
        cash_value=rewards.cash_value_usd,
        unit=rewards.unit,
        program=rewards.program,
        effective_rate=rewards.effective_rate,
    )


def _rewards_in(rewards: RewardsOut, amount_usd: Decimal) -> Rewards:
    """Round a response's rewards as the engine rounds its own (``rewardpilot.money``).

    An orchestrator may send a cash value with sub-cent digits, or no
    effective rate. Rounding here keeps sub-cent values out of results and
    totals, and writes the same digits as the in-process engine: a JSON
    number loses trailing zeros (16.40 arrives as 16.4) and quantizing puts
    them back. Points are exact in the engine, so they are only padded.
    """
    cash_value = round_cash(rewards.cash_value)
    effective_rate = rewards.effective_rate
    if effective_rate is None:
        effective_rate = cash_value / amount_usd
    return Rewards(
        amount=_at_least_places(rewards.points, 2),
        unit=rewards.unit,
        program=rewards.program or "unknown",
        cash_value_usd=cash_value,
        effective_rate=effective_rate.quantize(RATE_PLACES, CASH_ROUNDING),
    )


def _at_least_places(value: Decimal, places: int) -> Decimal:
    """Return ``value`` with at least ``places`` decimal places, adding zeros only."""
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int) or exponent <= -places:
        return value
    return value.quantize(Decimal(1).scaleb(-places))


class FieldError(BaseModel):
    """One invalid field: its dotted name and what is wrong with it."""

    field: str
    message: str


class ErrorBody(BaseModel):
    """Why a request or a batch item failed."""

    type: str
    message: str
    fields: list[FieldError] = []


class BatchRequest(BaseModel):
    """The body of ``POST /recommend/batch``; a bare JSON list is accepted too.

    Items stay unvalidated here, so that one invalid item fails alone.
    """

    transactions: Annotated[list[Any], Field(max_length=MAX_BATCH_ITEMS)]


class BatchItemResult(BaseModel):
    """The outcome of one batch item, at its ``index`` in the request."""

    index: int
    ok: bool
    recommendation: RecommendResponse | None = None
    error: ErrorBody | None = None


class BatchResponse(BaseModel):
    """The outcomes of ``POST /recommend/batch``, one per item and in request order."""

    results: list[BatchItemResult]


class HealthResponse(BaseModel):
    """The body of ``GET /health``; ``endpoints`` lists the paths this server offers.

    ``redis`` is "ok" when a PING to the server's Redis succeeded,
    "unreachable" when it failed (``status`` is then "unavailable", with HTTP
    503), and "not used" for a server started without Redis. ``prefix`` is the key
    prefix the server reads wallets and valuations under; consumers must use
    the same one.
    """

    status: Literal["ok", "unavailable"] = "ok"
    endpoints: list[str]
    catalog_version: str
    engine_version: str
    redis: Literal["ok", "unreachable", "not used"] = "not used"
    prefix: str | None = None


class CardSummary(BaseModel):
    """A catalog card as ``GET /cards`` and the ``list_cards`` tool list it."""

    card_id: str
    card_name: str
    issuer: str
    network: str
    annual_fee_usd: Amount
    program: str
    unit: str
    source: str
    terms_as_of: str


class CardsResponse(BaseModel):
    """The body of ``GET /cards``."""

    catalog_version: str
    cards: list[CardSummary]


MAX_QUOTED_INPUT = 60  # characters of a rejected value that its error message quotes


def field_errors(details: Iterable[Mapping[str, Any]], *, skip_prefix: tuple[str, ...] = ()) -> list[FieldError]:
    """Turn pydantic error details (``ValidationError.errors()``) into one FieldError each.

    ``skip_prefix`` drops leading location parts such as FastAPI's ``body``.
    A message that does not quote the rejected value gets it appended as a
    ``repr`` (see ``_field_message``).
    """
    return [
        FieldError(field=_field_name(tuple(detail.get("loc", ())), skip_prefix), message=_field_message(detail))
        for detail in details
    ]


def _field_message(detail: Mapping[str, Any]) -> str:
    """Return the detail's message, ending in ``(got VALUE)`` when the value is a scalar the message leaves out.

    The value is written with ``repr``, which escapes lone surrogates and
    control characters, so the message can always be sent as JSON. A repr
    longer than ``MAX_QUOTED_INPUT`` is cut and ends in "...".
    """
    message = str(detail.get("msg", ""))
    value = detail.get("input")
    if detail.get("type") == "missing" or not isinstance(value, (str, bytes, int, float)):
        return message
    quoted = repr(value)
    if quoted in message:
        return message
    if len(quoted) > MAX_QUOTED_INPUT:
        quoted = quoted[: MAX_QUOTED_INPUT - 3] + "..."
    return f"{message} (got {quoted})"


def _field_name(loc: tuple[Any, ...], skip_prefix: tuple[str, ...]) -> str:
    parts = list(loc)
    for prefix in skip_prefix:
        if parts and parts[0] == prefix:
            parts.pop(0)
    return ".".join(str(part) for part in parts) or "body"


def describe_field_errors(fields: list[FieldError]) -> str:
    """Join field errors into one readable sentence for an error message."""
    listed = "; ".join(f"{field.field}: {field.message}" for field in fields)
    return f"invalid request: {listed}. Fix the named fields and send the request again."

