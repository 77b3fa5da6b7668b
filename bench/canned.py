"""A recommender that returns cached results, to measure the pipeline without the engine's cost.

``CannedRecommender`` runs the rules engine once per category text and MCC,
keeps that ``Evaluation``, and returns for every later transaction of the
same kind a copy of it that carries the new transaction. Everything else
the consumer does is unchanged: reading, decoding, wallet look-ups, result
JSON, the settle script and its markers. Row 4's "canned results" figure
runs it: the gap between that figure and the plain loop is the cost of
everything but the engine, and the gap to the product's own figure is the
engine's.

NOTE: the results are wrong for every transaction but the first of each
kind (amounts and reasoning belong to that first one). It is a benchmark
tool, never a recommender for users. Users with spend state still get
the engine, for each transaction; the benchmark's users have none.
"""

from __future__ import annotations

import copy
from typing import Sequence

from consumer.recommenders.base import ItemError, WorkItem
from consumer.recommenders.in_process import InProcessRecommender
from rewardpilot.engine.evaluation import Evaluation


class CannedRecommender(InProcessRecommender):
    """The in-process recommender, with each result copied from the first of its category text and MCC."""

    name = "canned"

    def __init__(self) -> None:
        super().__init__()
        self._results: dict[tuple[str, str | None], Evaluation] = {}

    async def recommend(self, items: Sequence[WorkItem]) -> list[Evaluation | ItemError]:
        outcomes: list[Evaluation | ItemError] = []
        for item in items:
            if item.state is not None:
                # Spend state changes the result from one transaction to the next.
                outcomes.extend(await super().recommend([item]))
                continue
            transaction = item.transaction
            key = (transaction.category, transaction.mcc)
            result = self._results.get(key)
            if result is None:
                [result] = await super().recommend([item])
                if isinstance(result, ItemError):
                    outcomes.append(result)
                    continue
                self._results[key] = result

            reply = copy.copy(result)
            reply.transaction = transaction
            outcomes.append(reply)
        return outcomes
