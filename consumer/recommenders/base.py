"""The contract between the consumer pool and whatever recommends cards."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping, Protocol, Sequence

from rewardpilot.engine.evaluation import Evaluation
from rewardpilot.engine.state import SpendState
from rewardpilot.models import Recommendation, Transaction, WalletSource


@dataclass(slots=True)  # not frozen: a frozen __init__ sets each field through object.__setattr__
class WorkItem:
    """One transaction to recommend for, with the wallet it is judged against.

    ``wallet`` is None when the answer is against the whole catalog. The
    rest is filled for the in-process engine only: the wallet's ``mode``,
    the user's valuation overrides, the batch's shared ``state`` and the
    hash fields this transaction may read from it. The recommender stores
    the cents it read per field in ``loaded``, for the settle script's check.
    ``retired_cards`` lists the stored cards the catalog lacks, left out of
    ``wallet``, so the reasoning can name them.
    """

    transaction: Transaction
    wallet: tuple[str, ...] | None
    wallet_source: WalletSource
    mode: str | None = None
    valuations: Mapping[str, str] | None = None
    state: SpendState | None = None
    spend_fields: tuple[str, ...] = ()
    loaded: dict[str, int] = field(default_factory=dict)
    retired_cards: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ItemError:
    """A permanent failure of one item: it goes to the dead-letter stream.

    ``attempts`` counts the calls made for the item, including transient
    failures before this answer; ``first_failure_at`` is when the first of
    them failed (None: this call was the first failure). ``reason`` becomes
    the dead letter's reason.
    """

    error_type: str
    message: str
    http_status: int | None = None
    attempts: int = 1
    first_failure_at: datetime | None = None
    reason: str = "rejected by recommender"


class Recommender(Protocol):
    """Recommends cards for a micro-batch.

    ``recommend`` returns one outcome per item, in order: a Recommendation
    (or the engine's ``Evaluation``, which settles to the same JSON), or an
    ItemError for an item that can never succeed. A failure of the
    whole call that may succeed later (the service is down, overloaded or
    slow) is raised as ``consumer.errors.TransientError`` instead, and the
    pool retries the batch; such a batch is never dead-lettered.

    A recommender behind a network may also define ``async connect()``,
    which reaches the service once. It raises ``TransientError`` when the
    service does not respond and ``PermanentError`` when it rejects the
    consumer. The pool calls it at start, to warn early.
    """

    name: str

    async def recommend(self, items: Sequence[WorkItem]) -> list[Recommendation | Evaluation | ItemError]: ...

    async def aclose(self) -> None: ...
