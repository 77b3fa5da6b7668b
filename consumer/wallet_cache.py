"""Wallet look-ups for a micro-batch: one round trip, cached for a few seconds."""

from __future__ import annotations

import time
from typing import Iterable

import redis.asyncio as aioredis

from rewardpilot.models import WalletSource
from rewardpilot.streams import StreamKeys
from rewardpilot.wallets import fetch_wallets

WalletChoice = tuple[tuple[str, ...] | None, WalletSource]


class WalletCache:
    """Resolves the wallet each user's transaction is judged against.

    A user's own wallet wins; without one, the run's ``--wallet``; without
    that, the whole catalog. NOTE: a changed wallet takes effect after at most
    ``ttl_seconds``, because entries are cached per process.
    """

    def __init__(self, client: aioredis.Redis, keys: StreamKeys, *,
                 run_wallet: Iterable[str] | None = None, ttl_seconds: float = 5.0):
        self.client = client
        self.keys = keys
        self.run_wallet = tuple(run_wallet) if run_wallet else None
        self.ttl = ttl_seconds
        self._cache: dict[str, tuple[float, tuple[str, ...] | None]] = {}

    def _fallback(self) -> WalletChoice:
        if self.run_wallet:
            return self.run_wallet, "run"
        return None, "catalog"

    async def resolve(self, user_ids: Iterable[str]) -> dict[str, WalletChoice]:
        now = time.monotonic()
        wanted = set(user_ids)
        missing = [user for user in wanted if self._expired(user, now)]

        if missing:
            fetched = await fetch_wallets(self.client, self.keys, missing)
            for user in missing:
                cards = fetched.get(user)
                self._cache[user] = (now, tuple(cards) if cards else None)

        choices: dict[str, WalletChoice] = {}
        for user in wanted:
            cards = self._cache[user][1]
            choices[user] = (cards, "user") if cards else self._fallback()
        return choices

    def _expired(self, user: str, now: float) -> bool:
        cached = self._cache.get(user)
        return cached is None or now - cached[0] > self.ttl
