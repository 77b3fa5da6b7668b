"""Wallet look-ups for a micro-batch: one round trip, cached for a few seconds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Iterable

import redis.asyncio as aioredis

from rewardpilot.engine.catalog import Catalog
from rewardpilot.models import WalletSource
from rewardpilot.streams import StreamKeys
from rewardpilot.user_terms import Warn, fetch_terms
from rewardpilot.wallets import WalletRecord, split_known_cards, unknown_cards_message

WalletChoice = tuple[tuple[str, ...] | None, WalletSource]


@dataclass(frozen=True, slots=True)
class UserTerms:
    """A user's wallet, the settings stored with it and the user's valuation overrides.

    ``record`` is None for a user without a wallet of their own; then the
    cycle day, activations and mode take their defaults. ``retired`` lists
    the stored cards the catalog lacks, which were left out of ``wallet``.
    """

    wallet: tuple[str, ...] | None
    source: WalletSource
    record: WalletRecord | None = None
    valuations: dict[str, str] = field(default_factory=dict)
    retired: tuple[str, ...] = ()


class WalletCache:
    """Resolves the wallet, wallet settings and valuation overrides of each user.

    A user's own wallet wins; without one, the run's ``--wallet``; without
    that, the whole catalog. NOTE: a changed wallet, activation, mode or
    valuation override takes effect after at most ``ttl_seconds``, because
    entries are cached per process.

    With a ``catalog``, stored cards it lacks (retired or renamed since the
    wallet was set) are left out with a warning through ``warn``, and a
    wallet with no known card left is treated as no wallet. Without one,
    stored wallets are used as stored.
    """

    def __init__(self, client: aioredis.Redis, keys: StreamKeys, *,
                 run_wallet: Iterable[str] | None = None, ttl_seconds: float = 5.0,
                 catalog: Catalog | None = None, warn: Warn | None = None):
        self.client = client
        self.keys = keys
        self.run_wallet = tuple(run_wallet) if run_wallet else None
        self.ttl = ttl_seconds
        self.catalog = catalog
        self.warn = warn
        self._cache: dict[str, tuple[float, WalletRecord | None, dict[str, str], tuple[str, ...]]] = {}

    def _fallback(self) -> WalletChoice:
        if self.run_wallet:
            return self.run_wallet, "run"
        return None, "catalog"

    async def resolve(self, user_ids: Iterable[str]) -> dict[str, WalletChoice]:
        """Return each user's (wallet, source)."""
        terms = await self.resolve_terms(user_ids)
        return {user: (found.wallet, found.source) for user, found in terms.items()}

    async def resolve_terms(self, user_ids: Iterable[str]) -> dict[str, UserTerms]:
        """Return each user's wallet, wallet settings and valuation overrides.

        Users not cached are fetched together in one round trip: one MGET of
        the wallets and one HGETALL of valuations per user, pipelined.
        """
        now = time.monotonic()
        wanted = set(user_ids)
        missing = [user for user in wanted if self._expired(user, now)]
        if missing:
            await self._fetch(missing, now)

        terms: dict[str, UserTerms] = {}
        for user in wanted:
            _, record, valuations, retired = self._cache[user]
            if record is not None and record.cards:
                terms[user] = UserTerms(tuple(record.cards), "user", record, valuations, retired)
            else:
                wallet, source = self._fallback()
                terms[user] = UserTerms(wallet, source, None, valuations, retired)
        return terms

    async def _fetch(self, users: list[str], now: float) -> None:
        fetched = await fetch_terms(self.client, self.keys, users)
        for user, stored in fetched.items():
            record, retired = self._known_cards_only(user, stored.record)
            self._cache[user] = (now, record, stored.valuations, retired)

    def _known_cards_only(self, user: str, record: WalletRecord | None
                          ) -> tuple[WalletRecord | None, tuple[str, ...]]:
        """Return ``record`` without the cards the catalog lacks (None when no card is left), and those cards."""
        if record is None or self.catalog is None:
            return record, ()
        known, unknown = split_known_cards(record.cards, self.catalog)
        if not unknown:
            return record, ()
        if self.warn is not None:
            message = unknown_cards_message(
                known, "judging as a user without a wallet",
                "`rewardpilot wallet set USER CARD...` (or rewardpilot.wallets.set_wallet)",
            )
            self.warn("wallet-card-unknown", message, user_id=user, unknown_cards=unknown, cards_left=known)
        if not known:
            return None, tuple(unknown)
        # Activations stay keyed by card, so those of a retired card are simply never read.
        return replace(record, cards=known), tuple(unknown)

    def _expired(self, user: str, now: float) -> bool:
        cached = self._cache.get(user)
        return cached is None or now - cached[0] > self.ttl

