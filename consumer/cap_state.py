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

from typing import Callable, Mapping, Sequence

from consumer.recommenders.base import WorkItem
from consumer.wallet_cache import UserTerms, WalletCache
from rewardpilot import caps
from rewardpilot.engine import RulesEngine
from rewardpilot.engine.errors import InvalidModeError
from rewardpilot.engine.valuations import parse_cents
from rewardpilot.models import Transaction

Batch = Sequence[tuple[str, Transaction]]
Warn = Callable[..., None]  # (repeat key, message, **fields), rate-limited by the caller


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
    for user, found in terms.items():
        record = found.record
        if record is not None:
            state.set_terms(user, activations=record.activations, cycle_day=record.cycle_day)

    items = []
    for (_, transaction), fields in zip(batch, fields_of):
        found = terms[transaction.user_id]
        items.append(WorkItem(
            transaction, found.wallet, found.source,
            mode=_mode(engine, found, transaction.user_id, warn),
            valuations=_valuations(engine, found.valuations, transaction.user_id, warn),
            state=state if found.source != "catalog" else None,
            spend_fields=fields,
        ))
    return items


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


def _mode(engine: RulesEngine, found: UserTerms, user: str, warn: Warn) -> str | None:
    """Return the wallet's mode, or None (highest cash value) with a warning when it is invalid."""
    mode = found.record.mode if found.record is not None else None
    if mode is None:
        return None
    try:
        return engine.check_mode(mode)
    except InvalidModeError as exc:
        warn("wallet-mode-invalid", "wallet mode invalid; using the default mode", user_id=user, error=str(exc))
        return None


def _valuations(engine: RulesEngine, overrides: Mapping[str, str], user: str, warn: Warn) -> dict[str, str] | None:
    """Return the valid valuation overrides; an invalid one is logged and left out."""
    valid: dict[str, str] = {}
    for program, cents in overrides.items():
        if program not in engine.valuations.programs:
            warn("valuation-invalid", "valuation override for an unknown program left out",
                 user_id=user, program=program)
            continue
        try:
            parse_cents(program, cents)
        except ValueError as exc:
            warn("valuation-invalid", "valuation override invalid; left out",
                 user_id=user, program=program, error=str(exc))
            continue
        valid[program] = cents
    return valid or None
