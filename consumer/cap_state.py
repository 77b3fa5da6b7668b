"""Work items for the in-process engine, with each user's cap state loaded for the batch.

For a micro-batch, ``build_items``:

1. resolves each user's wallet, wallet settings (statement cycle day,
   rotating-category activations, optimization mode) and valuation
   overrides through the wallet cache (one round trip for users not cached);
2. lists the spend hash fields each transaction may read
   (``RulesEngine.spend_fields``) and loads them with one HMGET per user in
   one pipeline (``rewardpilot.caps.load_spend``);
3. returns one ``WorkItem`` per transaction, in stream order, all sharing
   the batch's ``SpendState``.

The recommender then records in each item the cents it read, and the settle
script applies the spend only if Redis still has those cents.

Spend is kept only for wallets the user holds: their own or the run's
``--wallet``. A recommendation against the whole catalog names a card the
user may not have, so it neither reads nor adds cap state.

The HTTP and MCP recommenders get plain work items: the orchestrator keeps
its own state, and the consumer applies no spend for their results.
"""

from __future__ import annotations

from typing import Sequence

from consumer.recommenders.base import WorkItem
from consumer.wallet_cache import UserTerms, WalletCache
from rewardpilot import caps
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction
from rewardpilot.user_terms import Warn, usable_mode, usable_valuations

Batch = Sequence[tuple[str, Transaction]]


async def build_items(wallets: WalletCache, batch: Batch, *, engine: RulesEngine, run: str,
                      warn: Warn) -> list[WorkItem]:
    """Return the batch's work items with wallet settings, valuations and a freshly loaded ``SpendState``."""
    terms = await wallets.resolve_terms(transaction.user_id for _, transaction in batch)

    fields_of: list[tuple[str, ...]] = []
    wanted: dict[str, list[str]] = {}
    for _, transaction in batch:
        fields = _spend_fields(engine, transaction, terms[transaction.user_id])
        fields_of.append(fields)
        wanted.setdefault(transaction.user_id, []).extend(fields)

    state = await caps.load_spend(wallets.client, wallets.keys, wanted, run=run)

    # Each user's mode and valuations are checked once per batch, not once per transaction.
    chosen: dict[str, tuple] = {}
    for user, found in terms.items():
        record = found.record
        if record is not None:
            state.set_terms(user, activations=record.activations, cycle_day=record.cycle_day)
        mode = usable_mode(engine, record.mode if record is not None else None, user, warn)
        valuations = usable_valuations(engine, found.valuations, user, warn)
        chosen[user] = (found.wallet, found.source, mode, valuations, state if found.source != "catalog" else None)

    # Arguments go by position (transaction, wallet, wallet_source, mode, valuations,
    # state, spend_fields), because keywords make a dataclass call about 0.3 us slower.
    return [
        WorkItem(transaction, *chosen[transaction.user_id], fields, retired_cards=terms[transaction.user_id].retired)
        for (_, transaction), fields in zip(batch, fields_of)
    ]


def _spend_fields(engine: RulesEngine, transaction: Transaction, found: UserTerms) -> tuple[str, ...]:
    if found.source == "catalog":
        return ()
    cycle_day = found.record.cycle_day if found.record is not None else None
    try:
        return tuple(engine.spend_fields(transaction, found.wallet, cycle_day=cycle_day))
    except (KeyError, ValueError):
        # The recommendation raises the same error for this item, and the
        # pool dead-letters it with the message.
        return ()
