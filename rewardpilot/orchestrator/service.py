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

log = get_logger(__name__)


class WalletLookupError(RuntimeError):
    """The user's wallet or valuations could not be read from Redis; the request may succeed later."""


class RecommendService:
    """Runs the rules engine for contract requests, reading each user's stored terms when it has Redis.

    ``redis`` is optional. With it, every request is judged with the user's
    optimization mode and valuation overrides, as the consumer's in-process
    engine judges it, and a request without ``wallet`` uses the user's
    stored wallet. Without it, a request without ``wallet`` is judged
    against the whole catalog with the default mode and valuations.

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
        ``ValueError`` for a transaction the engine rejects, and
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

        if request.wallet is not None:
            wallet, source = list(request.wallet), request.wallet_source or "run"
        elif stored.cards:
            wallet, source = stored.cards, "user"
        else:
            wallet, source = None, "catalog"
        user = request.user_id
        mode = usable_mode(self.engine, stored.record.mode if stored.record is not None else None, user, self._warn)
        valuations = usable_valuations(self.engine, stored.valuations, user, self._warn)

        # NOTE: the engine runs on the event loop. It is pure CPU work of well
        # under a millisecond per transaction, so a thread hop would cost more.
        return self.engine.evaluate_or_fallback(request.to_transaction(), wallet, wallet_source=source,
                                                valuations=valuations, mode=mode)

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
