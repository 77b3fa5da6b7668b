"""The transport interface the consumer pool is written against.

A transport hands out micro-batches and takes them back settled. The pool
never branches on which transport it has; the delivery promise is the same
for all of them: an entry is handed out until a settle acknowledges it, so a
consumer that dies mid-batch loses nothing (at least once), and settlement
skips transactions the run already has an outcome for (effectively once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from consumer.settle import Result, SettleCounts, SpendChecks
from rewardpilot.models import DeadLetter


class TransportError(Exception):
    """The transport's backend is unreachable for now; the pool backs off and retries."""


@dataclass(slots=True)
class Delivery:
    """One handed-out entry: its id (``<milliseconds>-<sequence>``), raw fields and stream.

    ``stream`` is set by transports that read several streams (partitions);
    entry ids are unique only within one stream.
    """

    entry_id: str
    fields: dict
    stream: str | None = None


@dataclass(slots=True)
class Reclaimed:
    """What one recovery pass found among entries whose consumer went quiet.

    ``stream`` names the stream of the ``lost`` entry ids for transports that
    read several streams; None means the pool's transactions stream.
    """

    deliveries: list[Delivery] = field(default_factory=list)
    poison: list[tuple[Delivery, int]] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    stream: str | None = None


class Transport(Protocol):
    name: str

    async def open(self) -> None:
        """Prepare to read (create the consumer group, for a stream)."""

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """Return up to ``count`` new entries, waiting up to ``block_ms`` for the first."""

    async def settle(self, results: list[tuple[str, Result]], dead_letters: list[DeadLetter],
                     acknowledge: list[str], checks: SpendChecks | None = None) -> SettleCounts:
        """Publish results and dead letters and acknowledge their entries, atomically.

        Entries in ``SettleCounts.conflicts`` stay in hand, unsettled, for the
        caller to settle again or give back (``consumer.settle``).
        """

    async def give_back(self, entry_ids: list[str]) -> None:
        """Return unsettled entries for any consumer to take now, without counting a delivery."""

    async def reclaim(self) -> Reclaimed:
        """Take over entries held past the visibility timeout by consumers that went quiet."""

    async def drained(self) -> bool:
        """Return True when nothing is waiting and nothing is held unsettled."""

    async def close(self) -> None:
        """Leave (delete this consumer from its group when it holds nothing)."""
