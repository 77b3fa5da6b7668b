"""Wallets: which cards each user holds, stored in Redis.

A wallet is one string key per user, ``keys.wallet(user_id)``, holding a
small JSON object::

    {"cards": ["amex-gold", "citi-double-cash"], "updated_at": "2026-12-04T20:00:00Z", "v": 1}

An object rather than a bare list, so that a later version can add a
statement-cycle day or rotating-category activations without a migration.
The set ``keys.wallet_index`` holds every user id with a wallet, so wallets
can be listed without SCAN.

The CLI uses the synchronous functions; the consumer uses ``fetch_wallets``,
which reads a whole micro-batch of users in one MGET round trip. (MGET
needs all keys in one hash slot on Redis Cluster; this project targets a
single server.)
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable, Sequence

import orjson
import redis
import redis.asyncio as aioredis
import structlog

from rewardpilot.engine.catalog import Catalog
from rewardpilot.models import MAX_ID_LENGTH
from rewardpilot.streams import StreamKeys

log = structlog.get_logger(__name__)

WALLET_FORMAT_VERSION = 1

DEMO_WALLETS: dict[str, tuple[str, ...]] = {
    "demo-foodie": ("amex-gold", "capital-one-savor", "citi-double-cash"),
    "demo-traveler": ("chase-sapphire-reserve", "amex-platinum", "capital-one-venture-x", "chase-freedom-unlimited"),
    "demo-cashback": ("wells-fargo-active-cash", "amex-blue-cash-preferred", "citi-custom-cash", "discover-it-cash-back"),
    "demo-trifecta": ("chase-sapphire-preferred", "chase-freedom-unlimited", "chase-freedom-flex"),
}


def demo_marker(keys: StreamKeys) -> str:
    """Key recording that demo wallets were considered once, so they never come back."""
    return f"{keys.wallet_index}:demo-seeded"


def check_user_id(user_id: str) -> str:
    text = user_id.strip() if isinstance(user_id, str) else ""
    if not text:
        raise ValueError("user id is empty")
    if len(text) > MAX_ID_LENGTH:
        raise ValueError(f"user id is longer than {MAX_ID_LENGTH} characters")
    return text


def resolve_cards(card_ids: Iterable[str], catalog: Catalog) -> list[str]:
    """Catalog ids for ``card_ids`` (aliases such as "csp" allowed), in order, without repeats.

    Raises UnknownCardError naming the first bad id and its closest matches,
    or ValueError when no card is given.
    """
    resolved: list[str] = []
    for card_id in card_ids:
        canonical = catalog.get(card_id).card_id
        if canonical not in resolved:
            resolved.append(canonical)
    if not resolved:
        raise ValueError("a wallet needs at least one card")
    return resolved


def encode_wallet(cards: Sequence[str]) -> bytes:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return orjson.dumps({"cards": list(cards), "updated_at": now, "v": WALLET_FORMAT_VERSION})


def decode_wallet(raw: bytes | str | None) -> list[str] | None:
    """The card ids in a stored wallet; None when there is none or it cannot be read."""
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.warning("wallet_unreadable", reason="not JSON")
        return None
    cards = data.get("cards") if isinstance(data, dict) else data  # a bare list is read too
    if not isinstance(cards, list) or not all(isinstance(card, str) for card in cards):
        log.warning("wallet_unreadable", reason="no list of card ids")
        return None
    return cards or None


def set_wallet(
    client: redis.Redis, keys: StreamKeys, user_id: str, card_ids: Iterable[str], catalog: Catalog
) -> list[str]:
    """Store a user's wallet, replacing any earlier one; return the catalog ids stored."""
    user = check_user_id(user_id)
    cards = resolve_cards(card_ids, catalog)
    pipe = client.pipeline(transaction=True)
    pipe.set(keys.wallet(user), encode_wallet(cards))
    pipe.sadd(keys.wallet_index, user)
    pipe.execute()
    return cards


def get_wallet(client: redis.Redis, keys: StreamKeys, user_id: str) -> list[str] | None:
    """A user's card ids, or None when the user has no wallet."""
    return decode_wallet(client.get(keys.wallet(check_user_id(user_id))))


def list_wallets(client: redis.Redis, keys: StreamKeys) -> dict[str, list[str]]:
    """Every stored wallet by user id, sorted by user id."""
    users = sorted(_text(user) for user in client.smembers(keys.wallet_index))
    if not users:
        return {}
    raws = client.mget([keys.wallet(user) for user in users])
    wallets: dict[str, list[str]] = {}
    stale: list[str] = []
    for user, raw in zip(users, raws):
        cards = decode_wallet(raw)
        if cards is None:
            if raw is None:
                stale.append(user)
            continue
        wallets[user] = cards
    if stale:  # index entries whose wallet key was deleted behind our back
        client.srem(keys.wallet_index, *stale)
    return wallets


def delete_wallet(client: redis.Redis, keys: StreamKeys, user_id: str) -> bool:
    """Delete a user's wallet; return whether there was one."""
    user = check_user_id(user_id)
    pipe = client.pipeline(transaction=True)
    pipe.delete(keys.wallet(user))
    pipe.srem(keys.wallet_index, user)
    deleted, _ = pipe.execute()
    return bool(deleted)


def ensure_demo_wallets(client: redis.Redis, keys: StreamKeys, catalog: Catalog) -> list[str]:
    """Create the demo wallets on the first run, when nobody has a wallet yet.

    Runs at most once per key prefix: a marker key records that it ran (even
    if it created nothing because wallets already existed), so deleting the
    demo wallets does not bring them back. Returns the user ids created.
    """
    if not client.set(demo_marker(keys), datetime.now(timezone.utc).isoformat(), nx=True):
        return []
    if client.scard(keys.wallet_index):
        return []
    created: list[str] = []
    for user, cards in DEMO_WALLETS.items():
        resolved = resolve_cards(cards, catalog)
        if client.set(keys.wallet(user), encode_wallet(resolved), nx=True):
            client.sadd(keys.wallet_index, user)
            created.append(user)
    return created


async def fetch_wallets(
    aclient: aioredis.Redis, keys: StreamKeys, user_ids: Iterable[str]
) -> dict[str, list[str] | None]:
    """Wallets for a batch of users in one MGET; None for a user without one."""
    users = list(dict.fromkeys(user_ids))
    if not users:
        return {}
    raws = await aclient.mget([keys.wallet(user) for user in users])
    return {user: decode_wallet(raw) for user, raw in zip(users, raws)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
