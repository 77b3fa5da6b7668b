"""The default recommender: the rules engine, called in this process."""

from __future__ import annotations

from typing import Sequence

from consumer.recommenders.base import ItemError, WorkItem
from rewardpilot.engine import RulesEngine
from rewardpilot.engine.evaluation import Evaluation


class InProcessRecommender:
    """Runs ``RulesEngine.evaluate_or_fallback`` for each item, in order; nothing here is transient.

    Its results are ``Evaluation`` objects, which the settle script writes
    as JSON without building ``Recommendation`` models. Items that share a
    ``SpendState`` see each other's spend, so they must come in stream
    order per user.
    """

    name = "in-process"

    def __init__(self, engine: RulesEngine | None = None):
        self.engine = engine or RulesEngine.default()

    async def recommend(self, items: Sequence[WorkItem]) -> list[Evaluation | ItemError]:
        outcomes: list[Evaluation | ItemError] = []
        for item in items:
            if item.state is not None:
                user = item.transaction.user_id
                item.loaded.clear()
                item.loaded.update({name: item.state.spent(user, name) for name in item.spend_fields})
            try:
                outcomes.append(
                    self.engine.evaluate_or_fallback(
                        item.transaction, item.wallet, wallet_source=item.wallet_source,
                        valuations=item.valuations, mode=item.mode, state=item.state,
                    )
                )
            except (KeyError, ValueError) as exc:
                outcomes.append(ItemError(type(exc).__name__, str(exc)))
        return outcomes

    async def aclose(self) -> None:
        return None
