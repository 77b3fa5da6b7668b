"""Wallets: which cards each user holds, stored in Redis.

A wallet is one string key per user, ``keys.wallet(user_id)``, holding a
small JSON object::

    {"cards": ["amex-gold", "chase-freedom-flex"], "updated_at": "2026-12-04T20:00:00Z", "v": 1,
     "cycle_day": 15, "activations": {"chase-freedom-flex": ["2025Q3"]}, "mode": "cash"}

Three settings are optional. ``cycle_day`` (1-28) is the day each statement
cycle starts. ``activations`` lists the quarters in which each
rotating-category card's 5% categories were activated. ``mode`` sets how the
engine ranks cards: "cash", "cashback" or "program:<name>". A wallet without
them reads as calendar-month cycles, nothing activated and mode "cash".
The set ``keys.wallet_index`` holds every user id with a wallet, so wallets
can be listed without SCAN.

The CLI uses the synchronous functions; the consumer uses ``fetch_wallets``,
which reads a whole micro-batch of users in one MGET round trip. (MGET
needs all keys in one hash slot on Redis Cluster; this project targets a
single server.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Sequence

import orjson
import redis
import redis.asyncio as aioredis

from rewardpilot.engine import RulesEngine
from rewardpilot.engine.catalog import Catalog
from rewardpilot.engine.state import check_cycle_day
from rewardpilot.logs import get_logger
from rewardpilot.models import MAX_ID_LENGTH
from rewardpilot.streams import StreamKeys

log = get_logger(__name__)

WALLET_FORMAT_VERSION = 1

# Each demo wallet contains a Visa card, so it can pay at Costco U.S. (Visa only; merchant_rules in cards.json).
DEMO_WALLETS: dict[str, tuple[str, ...]] = {
    "demo-foodie": ("amex-gold", "capital-one-savor", "citi-double-cash", "chase-freedom-unlimited"),
    "demo-traveler": ("chase-sapphire-reserve", "amex-platinum", "capital-one-venture-x", "chase-freedom-unlimited"),
    "demo-cashback": ("wells-fargo-active-cash", "amex-blue-cash-preferred", "citi-custom-cash", "discover-it-cash-back"),
    "demo-student": ("chase-sapphire-preferred", "chase-freedom-unlimited", "chase-freedom-flex"),
}


_QUARTER = re.compile(r"^(\d{4})-?Q([1-4])$", re.IGNORECASE)


class NotACardListError(TypeError):
    """Card ids given as one string, or as anything else that is not a list of strings."""


@dataclass
class WalletRecord:
    """A stored wallet: the cards and the settings that change what they earn."""

    cards: list[str]
    cycle_day: int | None = None
    activations: dict[str, list[str]] = field(default_factory=dict)
    mode: str | None = None


def check_quarter(value: str) -> str:
    """Parse a quarter into ``2026Q4`` form ("2026-Q4" and "2026q4" are read too); raise ValueError otherwise."""
    match = _QUARTER.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"quarter {value!r} is not a quarter; write it like 2026Q4")
    return f"{match.group(1)}Q{match.group(2)}"


def demo_marker(keys: StreamKeys) -> str:
    """Key recording that demo wallets were considered once, so they never come back."""
    return f"{keys.wallet_index}:demo-seeded"


def check_user_id(user_id: str) -> str:
    """Return ``user_id`` without surrounding spaces; raise ValueError when it is empty, not text or too long."""
    if not isinstance(user_id, str):
        raise ValueError(f"user id {user_id!r} is not text but {type(user_id).__name__}; pass the user_id as text, "
                         "as the transactions carry it")
    text = user_id.strip()
    if not text:
        raise ValueError("user id is empty; pass the user_id the transactions carry")
    if len(text) > MAX_ID_LENGTH:
        raise ValueError(f"user id {text[:40]!r}... is {len(text)} characters, longer than {MAX_ID_LENGTH}; "
                         "use the shorter id the transactions carry")
    return text


def resolve_cards(card_ids: Iterable[str], catalog: Catalog) -> list[str]:
    """Catalog ids for ``card_ids`` (aliases such as "csp" allowed), in order, without repeats.

    Raises UnknownCardError naming the first bad id and its closest matches,
    ValueError when no card is given, and NotACardListError (a TypeError)
    when ``card_ids`` is one string or not a list of strings.
    """
    _check_card_list(card_ids)
    resolved: list[str] = []
    for card_id in card_ids:
        canonical = catalog.get(card_id).card_id
        if canonical not in resolved:
            resolved.append(canonical)
    if not resolved:
        raise ValueError("a wallet needs at least one card")
    return resolved


def _check_card_list(card_ids: object) -> None:
    # A str is an iterable of one-letter strings, which would read as cards 'a', 'm', 'e' and so on.
    if isinstance(card_ids, (str, bytes)):
        raise NotACardListError(f"card ids {card_ids!r} are one string, not a list; pass a list such as [{card_ids!r}]")
    if not isinstance(card_ids, Iterable):
        raise NotACardListError(f"card ids {card_ids!r} are not a list; pass a list of card ids such as ['amex-gold']")
    if isinstance(card_ids, (list, tuple)):
        for index, card_id in enumerate(card_ids):
            if not isinstance(card_id, str):
                raise NotACardListError(f"card id at index {index} is {card_id!r}, not a string; pass card ids "
                                        "such as 'amex-gold'")


def split_known_cards(cards: Sequence[str], catalog: Catalog) -> tuple[list[str], list[str]]:
    """Split stored card ids into those ``catalog`` contains and those it lacks, keeping their order.

    A stored wallet keeps the ids it was written with, so a card that a
    later catalog retired or renamed lands in the second list.
    """
    known: list[str] = []
    unknown: list[str] = []
    for card in cards:
        (known if card in catalog else unknown).append(card)
    return known, unknown


def unknown_cards_message(cards_left: Sequence[str], none_left: str,
                          how_to_store: str = "`rewardpilot wallet set USER CARD...`") -> str:
    """Build the warning for a stored wallet that names cards the catalog lacks.

    ``none_left`` says how the user is judged when no known card is left,
    and ``how_to_store`` names the way to store the user's current cards.
    """
    fallback = "judging against the rest" if cards_left else none_left
    return (f"stored wallet names cards the catalog does not have; {fallback}. Store the user's current cards "
            f"with {how_to_store}")


def encode_wallet(cards: Sequence[str], *, cycle_day: int | None = None,
                  activations: dict[str, list[str]] | None = None, mode: str | None = None) -> bytes:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    data: dict[str, object] = {"cards": list(cards), "updated_at": now, "v": WALLET_FORMAT_VERSION}
    if cycle_day is not None:
        data["cycle_day"] = cycle_day
    if activations:
        data["activations"] = activations
    if mode:
        data["mode"] = mode
    return orjson.dumps(data)


def decode_wallet(raw: bytes | str | None) -> list[str] | None:
    """The card ids in a stored wallet; None when there is none or it cannot be read."""
    record = decode_wallet_record(raw)
    return record.cards if record else None


def decode_wallet_record(raw: bytes | str | None) -> WalletRecord | None:
    """Decode a stored wallet with its settings; None when there is none or its cards cannot be read.

    Unreadable settings are logged and dropped, so a bad ``cycle_day`` never
    hides the cards.
    """
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
    if not cards:
        return None
    record = WalletRecord(cards=cards)
    if not isinstance(data, dict):
        return record

    if data.get("cycle_day") is not None:
        try:
            record.cycle_day = check_cycle_day(data["cycle_day"])
        except ValueError as exc:
            log.warning("wallet_setting_unreadable", setting="cycle_day", error=str(exc))
    activations = data.get("activations")
    if isinstance(activations, dict):
        record.activations = {
            str(card): [str(quarter) for quarter in quarters]
            for card, quarters in activations.items() if isinstance(quarters, list)
        }
    elif activations is not None:
        log.warning("wallet_setting_unreadable", setting="activations", error="not an object")
    if isinstance(data.get("mode"), str):
        record.mode = data["mode"]
    return record


def update_wallet_record(
    client: redis.Redis, keys: StreamKeys, user_id: str,
    change: Callable[[WalletRecord | None], WalletRecord],
) -> WalletRecord:
    """Write back what ``change`` makes of a user's wallet record (None when there is none); return it.

    The read and the write are one optimistic transaction under WATCH. When
    another client changes the wallet in between, the transaction runs again
    with ``change`` applied to the new record, so neither change is lost.
    ``change`` may raise to write nothing.
    """
    key = keys.wallet(user_id)
    written: list[WalletRecord] = []

    def attempt(pipe) -> None:
        record = change(decode_wallet_record(pipe.get(key)))
        pipe.multi()
        pipe.set(key, encode_wallet(record.cards, cycle_day=record.cycle_day, activations=record.activations,
                                    mode=record.mode))
        pipe.sadd(keys.wallet_index, user_id)
        written[:] = [record]

    client.transaction(attempt, key)
    return written[0]


def set_wallet(
    client: redis.Redis, keys: StreamKeys, user_id: str, card_ids: Iterable[str], catalog: Catalog, *,
    cycle_day: int | None = None, mode: str | None = None,
) -> list[str]:
    """Store a user's wallet cards, replacing the earlier ones; return the catalog ids stored.

    The earlier wallet's activations are kept for the cards that stay, and
    so are its cycle day and mode unless new ones are given. ``mode`` is
    checked as the consumer checks it, with ``RulesEngine.default().check_mode``.

    Raises NotACardListError (a TypeError) when ``card_ids`` is one string
    or not a list of strings, UnknownCardError for a card the catalog
    lacks, InvalidModeError for a bad mode, and ValueError for a bad cycle
    day, an empty list of cards or an invalid user id. Nothing is stored
    when it raises.
    """
    user = check_user_id(user_id)
    cards = resolve_cards(card_ids, catalog)
    if cycle_day is not None:
        cycle_day = check_cycle_day(cycle_day)
    if mode is not None:
        mode = RulesEngine.default().check_mode(mode)

    def replace_cards(earlier: WalletRecord | None) -> WalletRecord:
        if earlier is None:
            return WalletRecord(cards, cycle_day=cycle_day, mode=mode)
        # Activations of a card that leaves the wallet go with it.
        activations = {card: quarters for card, quarters in earlier.activations.items() if card in cards}
        return WalletRecord(cards, cycle_day=cycle_day if cycle_day is not None else earlier.cycle_day,
                            activations=activations, mode=mode or earlier.mode)

    update_wallet_record(client, keys, user, replace_cards)
    return cards


def get_wallet_record(client: redis.Redis, keys: StreamKeys, user_id: str) -> WalletRecord | None:
    """Read a user's wallet with its settings, or None when the user has no wallet."""
    return decode_wallet_record(client.get(keys.wallet(check_user_id(user_id))))


def activate_quarter(
    client: redis.Redis, keys: StreamKeys, user_id: str, card_id: str, quarter: str, catalog: Catalog
) -> str:
    """Record that a wallet's rotating-category card was activated for ``quarter``; return it as ``2026Q4``.

    Raises UnknownCardError for an unknown card, and ValueError when the user
    has no wallet, the wallet does not hold the card, the card has no
    rotating categories or the quarter is malformed.
    """
    user = check_user_id(user_id)
    card = catalog.get(card_id)
    key = check_quarter(quarter)
    if not any(rule.kind == "rotating" for rule in card.earn):
        raise ValueError(f"{card.card_id} has no rotating quarterly categories to activate")

    def activate(record: WalletRecord | None) -> WalletRecord:
        if record is None:
            raise ValueError(f"no wallet for user {user!r}; set one with `rewardpilot wallet set {user} CARD...`")
        if card.card_id not in record.cards:
            raise ValueError(f"the wallet of {user!r} does not hold {card.card_id}; add it with `rewardpilot wallet set`")
        quarters = record.activations.setdefault(card.card_id, [])
        if key not in quarters:
            quarters.append(key)
        return record

    update_wallet_record(client, keys, user, activate)
    return key


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


async def fetch_wallet_records(
    aclient: aioredis.Redis, keys: StreamKeys, user_ids: Iterable[str]
) -> dict[str, WalletRecord | None]:
    """Wallets with their settings for a batch of users in one MGET; None for a user without one."""
    users = list(dict.fromkeys(user_ids))
    if not users:
        return {}
    raws = await aclient.mget([keys.wallet(user) for user in users])
    return {user: decode_wallet_record(raw) for user, raw in zip(users, raws)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
