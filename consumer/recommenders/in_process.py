"""The default recommender: the rules engine, called in this process."""

from __future__ import annotations

from typing import Sequence

from consumer.recommenders.base import ItemError, WorkItem
from rewardpilot.engine import RulesEngine
from rewardpilot.engine.evaluation import Evaluation
from rewardpilot.logs import RepeatFilter, get_logger
from rewardpilot.models import Transaction

log = get_logger("consumer.engine")
_repeats = RepeatFilter(interval_seconds=10.0)  # the 10 s that engine_error's docstring states


def engine_error(exc: Exception, transaction: Transaction) -> ItemError:
    """Return the dead letter's error for an exception the rules engine raised on one transaction.

    The engine raises KeyError and ValueError subclasses for bad input
    (``rewardpilot.engine.errors``). Any other exception is unexpected, so
    it is also logged with its traceback, at most once per 10 s.
    """
    if not isinstance(exc, (KeyError, ValueError)):
        allowed, suppressed = _repeats.allow("unexpected-engine-error")
        if allowed:
            log.error("rules engine failed on a transaction; it goes to the dead-letter stream",
                      transaction_id=transaction.transaction_id, user_id=transaction.user_id,
                      error_type=type(exc).__name__, error=str(exc), suppressed_repeats=suppressed,
                      exc_info=exc)
    return ItemError(type(exc).__name__, str(exc) or repr(exc))


class InProcessRecommender:
    """Runs ``RulesEngine.evaluate_or_fallback`` for each item, in order; nothing here is transient.

    Its results are ``Evaluation`` objects, which the settle script writes
    as JSON without building ``Recommendation`` models. Items that share a
    ``SpendState`` see each other's spend, so they must come in stream
    order per user.

    Any exception the engine raises on one item (an ``Exception``, not a
    cancellation) becomes that item's ``ItemError``, with the exception's
    type and message, and the other items are still recommended. The spend
    a failed item may already have added to the shared state is taken out
    again, so the items after it read the spend as it was before it.
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
                        retired_cards=item.retired_cards,
                    )
                )
            except Exception as exc:
                _restore_spend(item)
                outcomes.append(engine_error(exc, item.transaction))
        return outcomes

    async def aclose(self) -> None:
        return None


def _restore_spend(item: WorkItem) -> None:
    """Set the item's spend fields in the shared state back to the cents read before its evaluation.

    The engine adds spend only to fields that ``spend_fields`` lists, and
    ``item.loaded`` contains each of them as read before the evaluation.
    """
    if item.state is None:
        return
    spend = item.state.user(item.transaction.user_id).spend
    for name, cents in item.loaded.items():
        spend[name] = cents
