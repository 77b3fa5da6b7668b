"""``LimiterChain``: several rate limiters that every call takes tokens from.

A replay with ``--rate`` and an orchestrator uses one: its own bucket caps
the replay alone, and a guest of the shared orchestrator bucket counts its
calls against the rate the live consumers set, without changing that rate.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import fields

from consumer.ratelimit.base import LimiterStats, Permit, RateLimiter


class ChainPermit(Permit):
    """The permits of every limiter in a chain. Marking it used marks them all."""

    def __init__(self, permits: Sequence[Permit]):
        super().__init__(cost=max(permit.cost for permit in permits), waited=sum(permit.waited for permit in permits))
        self.permits = list(permits)

    def mark_used(self) -> None:
        super().mark_used()
        for permit in self.permits:
            permit.mark_used()


class LimiterChain(RateLimiter):
    """Takes tokens from each limiter in turn, so a call waits for the slowest of them.

    ``config`` is the first limiter's. ``acquire`` and ``release`` pass the
    same cost to every limiter, while ``batch_permit`` lets each limiter
    price the batch itself, which a chain with a guest needs. A 429 cuts the rate of
    every limiter, and a success rewards every limiter.
    """

    def __init__(self, limiters: Sequence[RateLimiter]):
        if not limiters:
            raise ValueError("a limiter chain needs at least one limiter")
        self.limiters = list(limiters)
        self.config = self.limiters[0].config

    @property
    def stats(self) -> LimiterStats:
        """Return the counters of every limiter, added up."""
        total = LimiterStats()
        for limiter in self.limiters:
            for counter in fields(LimiterStats):
                setattr(total, counter.name, getattr(total, counter.name) + getattr(limiter.stats, counter.name))
        return total

    def bind_log(self, **context) -> None:
        for limiter in self.limiters:
            limiter.bind_log(**context)

    async def acquire(self, cost: int = 1, stop: asyncio.Event | None = None) -> float:
        """Take ``cost`` tokens from every limiter; return the seconds waited in all.

        When a later limiter raises (``AcquireStopped`` among others), the
        tokens already taken from the earlier ones are given back.
        """
        waited = 0.0
        granted_by: list[RateLimiter] = []
        try:
            for limiter in self.limiters:
                waited += await limiter.acquire(cost, stop)
                granted_by.append(limiter)
        except BaseException:
            for limiter in granted_by:
                await limiter.release(cost)
            raise
        return waited

    async def release(self, cost: int) -> None:
        for limiter in self.limiters:
            await limiter.release(cost)

    @asynccontextmanager
    async def batch_permit(self, batch_size: int, stop: asyncio.Event | None = None) -> AsyncIterator[ChainPermit]:
        """Hold a permit of every limiter for the block, each for its own cost of ``batch_size`` transactions.

        As with ``permit``, every limiter gets its tokens back unless the
        block marks the permit used.
        """
        async with AsyncExitStack() as stack:
            permits = [await stack.enter_async_context(limiter.batch_permit(batch_size, stop))
                       for limiter in self.limiters]
            yield ChainPermit(permits)

    async def penalize(self) -> bool:
        cuts = [await limiter.penalize() for limiter in self.limiters]
        return any(cuts)

    async def reward(self) -> None:
        for limiter in self.limiters:
            await limiter.reward()

    def effective_rate(self) -> float:
        """Return the lowest effective rate of the chain, which is infinite while no limiter has a bucket."""
        return min(limiter.effective_rate() for limiter in self.limiters)
