"""The recommendation service behind both the REST routes and the MCP tools."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rewardpilot import ENGINE_VERSION
from rewardpilot.engine import RulesEngine
from rewardpilot.engine.evaluation import Evaluation
from rewardpilot.logs import RepeatFilter, get_logger
from rewardpilot.models import Recommendation
from rewardpilot.orchestrator.contract import CardsResponse, CardSummary, RecommendRequest
from rewardpilot.streams import StreamKeys
from rewardpilot.user_terms import StoredTerms, fetch_terms, usable_mode, usable_valuations
from rewardpilot.wallets import split_known_cards, unknown_cards_message

log = get_logger(__name__)


class WalletLookupError(RuntimeError):
    """The user's wallet or valuations could not be read from Redis; the request may succeed later."""


class EngineFailedError(ValueError):
    """The rules engine raised an unexpected exception on one transaction.

    It is a ValueError, so the routes respond to it as to an invalid
    transaction: 422 for ``POST /recommend``, and an ``ok: false`` item in a
    batch whose other items are still recommended. ``__cause__`` is the
    engine's exception.
    """


class RecommendService:
    """Runs the rules engine for contract requests, reading each user's stored terms when it has Redis.

    ``redis`` is optional. With it, every request is judged with the user's
    optimization mode and valuation overrides, as the consumer's in-process
    engine judges it, and a request without ``wallet`` uses the user's
    stored wallet. Without it, a request without ``wallet`` is judged
    against the whole catalog with the default mode and valuations.

    A stored wallet's cards that the catalog lacks (retired or renamed) are
    left out with a warning, and a stored wallet with none left counts as
    no wallet, as in the consumer's wallet cache. The same holds for a
    request's ``wallet`` with ``wallet_source`` "user", which a consumer
    read from the user's stored wallet. An unknown card in any other
    ``wallet`` is an invalid request.

    NOTE: the service keeps no spend under caps and reads none, and it does
    not read rotating-category activations: it judges each purchase alone.
    """

    def __init__(self, engine: RulesEngine, *, redis: aioredis.Redis | None = None, keys: StreamKeys | None = None):
        self.engine = engine
        self.redis = redis
        self.keys = keys or StreamKeys()
        self._repeats = RepeatFilter()

    @property
    def catalog_version(self) -> str:
        return str(self.engine.catalog.version)

    @property
    def engine_version(self) -> str:
        return str(getattr(self.engine, "version", ENGINE_VERSION))

    async def recommend(self, request: RecommendRequest) -> Recommendation:
        """Recommend a card for one request.

        Raises ``UnknownCardError`` for a wallet card the catalog lacks,
        ``ValueError`` for a transaction the engine rejects (its subclass
        ``EngineFailedError`` for any other exception of the engine), and
        ``WalletLookupError`` when Redis fails.
        """
        return (await self.evaluate(request)).to_model()

    async def evaluate(self, request: RecommendRequest, terms: Mapping[str, StoredTerms] | None = None
                       ) -> Evaluation:
        """Work out the recommendation like ``recommend``, without building its models; raises the same errors.

        ``terms`` contains stored terms fetched ahead for a batch (``fetch_terms``);
        a user missing from it is looked up on its own.
        """
        stored = terms.get(request.user_id) if terms is not None else None
        if stored is None:
            fetched = await self.fetch_terms([request])
            stored = fetched[request.user_id] if fetched else StoredTerms()

        user = request.user_id
        record = stored.record
        retired: list[str] = []
        if request.wallet is not None and request.wallet_source != "user":
            wallet, source = list(request.wallet), request.wallet_source or "run"
            if record is not None:
                known, retired = split_known_cards(record.cards, self.engine.catalog)
                if not known:
                    # A stored wallet without a card of this catalog counts as no wallet, as in the
                    # consumer's wallet cache, so its mode does not apply to the run's wallet either.
                    record = None
        else:
            # A wallet_source "user" wallet is the user's stored wallet, forwarded by a consumer. Like a
            # wallet read here, it may name cards this catalog retired, so those are left out.
            cards = list(request.wallet) if request.wallet is not None else stored.cards
            wallet = self._known_stored_cards(user, cards)
            retired = [card for card in cards or () if card not in self.engine.catalog]
            source = "user" if wallet else "catalog"
            if not wallet:
                wallet, record = None, None  # judged as a user without a wallet, so with the default mode
        mode = usable_mode(self.engine, record.mode if record is not None else None, user, self._warn)
        valuations = usable_valuations(self.engine, stored.valuations, user, self._warn)

        transaction = request.to_transaction()
        # NOTE: the engine runs on the event loop. It is pure CPU work of well
        # under a millisecond per transaction, so a thread hop would cost more.
        try:
            return self.engine.evaluate_or_fallback(transaction, wallet, wallet_source=source,
                                                    valuations=valuations, mode=mode, retired_cards=retired)
        except ValueError:
            raise  # the engine's errors for bad input, UnknownCardError among them
        except Exception as exc:
            self._log_engine_failure(transaction.transaction_id, user, exc)
            raise EngineFailedError(
                f"the rules engine failed on transaction {transaction.transaction_id!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _known_stored_cards(self, user: str, cards: list[str] | None) -> list[str] | None:
        """Return the stored cards the catalog contains, warning about the others; None when none is left."""
        if not cards:
            return None
        known, unknown = split_known_cards(cards, self.engine.catalog)
        if unknown:
            self._warn("wallet-card-unknown", unknown_cards_message(known, "judging against the whole catalog"),
                       user_id=user, unknown_cards=unknown, cards_left=known)
        return known or None

    def _log_engine_failure(self, transaction_id: str, user: str, exc: Exception) -> None:
        allowed, suppressed = self._repeats.allow("engine-failed")
        if allowed:
            log.error("rules engine failed on a transaction; returned to the client as an invalid transaction",
                      transaction_id=transaction_id, user_id=user, error_type=type(exc).__name__,
                      error=str(exc), suppressed_repeats=suppressed, exc_info=exc)

    async def fetch_terms(self, requests: Iterable[RecommendRequest]) -> dict[str, StoredTerms] | None:
        """Read the stored terms of every request's user in one round trip; None without Redis.

        Raises ``WalletLookupError`` when Redis fails.
        """
        if self.redis is None:
            return None

        users = list(dict.fromkeys(request.user_id for request in requests))
        try:
            return await fetch_terms(self.redis, self.keys, users)
        except RedisError as exc:
            users_text = f"user {users[0]!r}" if len(users) == 1 else f"{len(users)} users"
            raise WalletLookupError(f"reading the wallet and valuations of {users_text} failed: {exc}") from exc

    def _warn(self, key: str, message: str, **fields) -> None:
        allowed, suppressed = self._repeats.allow(key)
        if allowed:
            log.warning(message, suppressed_repeats=suppressed, **fields)

    def cards(self) -> CardsResponse:
        """List the catalog's cards."""
        catalog = self.engine.catalog
        return CardsResponse(
            catalog_version=self.catalog_version,
            cards=[
                CardSummary(
                    card_id=card.card_id,
                    card_name=card.name,
                    issuer=card.issuer,
                    network=str(card.network),
                    annual_fee_usd=card.annual_fee_usd,
                    program=card.program,
                    unit=str(card.unit),
                    source=card.source,
                    terms_as_of=card.terms_as_of.isoformat(),
                )
                for card in catalog.cards
            ],
        )
