"""The recommendation service behind both the REST routes and the MCP tools."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rewardpilot import ENGINE_VERSION
from rewardpilot.engine import RulesEngine
from rewardpilot.engine.evaluation import Evaluation
from rewardpilot.models import Recommendation, WalletSource
from rewardpilot.orchestrator.contract import CardsResponse, CardSummary, RecommendRequest
from rewardpilot.streams import StreamKeys


class WalletLookupError(RuntimeError):
    """The user's wallet could not be read from Redis; the request may succeed later."""


class RecommendService:
    """Runs the rules engine for contract requests, reading stored wallets when it has Redis.

    ``redis`` is optional. Without it, a request without ``wallet`` is judged
    against the whole catalog.
    """

    def __init__(self, engine: RulesEngine, *, redis: aioredis.Redis | None = None, keys: StreamKeys | None = None):
        self.engine = engine
        self.redis = redis
        self.keys = keys or StreamKeys()

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

    async def evaluate(self, request: RecommendRequest, wallets: Mapping[str, list[str] | None] | None = None
                       ) -> Evaluation:
        """Work out the recommendation like ``recommend``, without building its models; raises the same errors.

        ``wallets`` contains stored wallets fetched ahead for a batch (``fetch_wallets``);
        a user missing from it is looked up on its own.
        """
        if wallets is not None and request.wallet is None and request.user_id in wallets:
            stored = wallets[request.user_id]
            wallet, source = (list(stored), "user") if stored else (None, "catalog")
        else:
            wallet, source = await self._wallet_for(request)

        # NOTE: the engine runs on the event loop. It is pure CPU work of well
        # under a millisecond per transaction, so a thread hop would cost more.
        return self.engine.evaluate_or_fallback(request.to_transaction(), wallet, wallet_source=source)

    async def fetch_wallets(self, requests: Iterable[RecommendRequest]) -> dict[str, list[str] | None] | None:
        """Read the stored wallets of every request without its own, in one round trip; None without Redis.

        Raises ``WalletLookupError`` when Redis fails.
        """
        if self.redis is None:
            return None

        from rewardpilot.wallets import fetch_wallets

        users = [request.user_id for request in requests if request.wallet is None]
        try:
            return await fetch_wallets(self.redis, self.keys, users)
        except RedisError as exc:
            raise WalletLookupError(f"reading the wallets of {len(users)} users failed: {exc}") from exc

    async def _wallet_for(self, request: RecommendRequest) -> tuple[list[str] | None, WalletSource]:
        if request.wallet is not None:
            return list(request.wallet), request.wallet_source or "run"
        if self.redis is None:
            return None, "catalog"

        from rewardpilot.wallets import fetch_wallets

        try:
            wallets = await fetch_wallets(self.redis, self.keys, [request.user_id])
        except RedisError as exc:
            raise WalletLookupError(f"reading the wallet of user {request.user_id!r} failed: {exc}") from exc

        stored = wallets.get(request.user_id)
        if stored:
            return list(stored), "user"
        return None, "catalog"

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
