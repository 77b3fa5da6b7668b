"""A user's stored terms: the wallet record (cards, cycle day, activations, mode) and valuation overrides.

The consumer's wallet cache and the bundled orchestrator both read them with
``fetch_terms``, in one round trip for a batch of users. Both drop a stored
mode or valuation the engine cannot use, with the same warnings
(``usable_mode``, ``usable_valuations``), so the two recommend alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import redis.asyncio as aioredis

from rewardpilot.engine import RulesEngine
from rewardpilot.engine.errors import InvalidModeError
from rewardpilot.engine.valuations import (  # noqa: F401 (re-exported)
    CASH_BACK_PROGRAM, FixedValuationError, check_settable_program, parse_cents,
)
from rewardpilot.streams import StreamKeys
from rewardpilot.wallets import WalletRecord, decode_wallet_record

Warn = Callable[..., None]  # (repeat key, message, **fields), rate-limited by the caller

def check_known_program(program: str, programs: Iterable[str]) -> None:
    """Raise ValueError naming the known programs when ``program`` is not one of ``programs``.

    The list leaves out cash back, whose valuation cannot be set.
    ``caps.set_valuation`` raises the same message.
    """
    names = set(programs)
    if program not in names:
        known = ", ".join(sorted(names - {CASH_BACK_PROGRAM}))
        raise ValueError(f"no valuation program {program!r}; known programs: {known}")


@dataclass(frozen=True, slots=True)
class StoredTerms:
    """One user's stored wallet record and valuation overrides; ``record`` is None without a stored wallet."""

    record: WalletRecord | None = None
    valuations: dict[str, str] = field(default_factory=dict)

    @property
    def cards(self) -> list[str] | None:
        """The user's own cards, or None when no wallet with cards is stored."""
        if self.record is None or not self.record.cards:
            return None
        return list(self.record.cards)


async def fetch_terms(client: aioredis.Redis, keys: StreamKeys, user_ids: Iterable[str]) -> dict[str, StoredTerms]:
    """Read the terms of every user in one round trip: one MGET of wallets, one HGETALL of valuations per user."""
    users = list(dict.fromkeys(user_ids))
    if not users:
        return {}

    async with client.pipeline(transaction=False) as pipe:
        pipe.mget([keys.wallet(user) for user in users])
        for user in users:
            pipe.hgetall(keys.valuations(user))
        raws, *valuations = await pipe.execute()

    return {
        user: StoredTerms(decode_wallet_record(raw), {_text(name): _text(value) for name, value in overrides.items()})
        for user, raw, overrides in zip(users, raws, valuations)
    }


def usable_mode(engine: RulesEngine, mode: str | None, user: str, warn: Warn) -> str | None:
    """Return a stored mode, or None (highest cash value) with a warning when the mode is invalid."""
    if mode is None:
        return None
    try:
        return engine.check_mode(mode)
    except InvalidModeError as exc:
        warn("wallet-mode-invalid", "wallet mode invalid; using the default mode", user_id=user, error=str(exc))
        return None


def usable_valuations(engine: RulesEngine, overrides: Mapping[str, str], user: str, warn: Warn
                      ) -> dict[str, str] | None:
    """Return the valid valuation overrides, or None when there are none.

    An invalid one, or one for cash back (``check_settable_program``), is logged and left out.
    """
    valid: dict[str, str] = {}
    for program, cents in overrides.items():
        if program == CASH_BACK_PROGRAM:
            warn("valuation-cash-back", "valuation override for cash back left out: cash back is always worth "
                 "its face value", user_id=user, program=program, stored_cents=cents)
            continue
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
