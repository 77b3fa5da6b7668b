"""Wallets in real Redis (embedded Valkey, and REDIS_URL when set)."""

from __future__ import annotations

import re

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from rewardpilot.engine import UnknownCardError, default_catalog
from rewardpilot.wallets import (
    DEMO_WALLETS,
    activate_quarter,
    delete_wallet,
    ensure_demo_wallets,
    fetch_wallets,
    get_wallet,
    get_wallet_record,
    list_wallets,
    set_wallet,
    update_wallet_record,
)

CATALOG = default_catalog()


def test_set_and_get_a_wallet(sync_client, keys):
    stored = set_wallet(sync_client, keys, "alice", ["amex-gold", "csp", "amex-gold"], CATALOG)
    assert stored == ["amex-gold", "chase-sapphire-preferred"]  # alias resolved, repeat dropped
    assert get_wallet(sync_client, keys, "alice") == ["amex-gold", "chase-sapphire-preferred"]
    assert sync_client.sismember(keys.wallet_index, "alice")
    record = orjson.loads(sync_client.get(keys.wallet("alice")))
    assert record["cards"] == ["amex-gold", "chase-sapphire-preferred"]
    assert record["v"] == 1 and record["updated_at"].endswith("Z")
    # Setting again replaces the wallet.
    set_wallet(sync_client, keys, "alice", ["citi-double-cash"], CATALOG)
    assert get_wallet(sync_client, keys, "alice") == ["citi-double-cash"]


def test_no_wallet_is_none(sync_client, keys):
    assert get_wallet(sync_client, keys, "nobody") is None
    assert list_wallets(sync_client, keys) == {}
    assert delete_wallet(sync_client, keys, "nobody") is False


def test_bad_card_id_is_rejected_with_close_matches(sync_client, keys):
    with pytest.raises(UnknownCardError) as caught:
        set_wallet(sync_client, keys, "bob", ["amex-gold", "chase-saphire-reserve"], CATALOG)
    assert "chase-saphire-reserve" in str(caught.value)
    assert "chase-sapphire-reserve" in str(caught.value)
    assert get_wallet(sync_client, keys, "bob") is None  # nothing half-written
    with pytest.raises(ValueError):
        set_wallet(sync_client, keys, "bob", [], CATALOG)
    with pytest.raises(ValueError):
        set_wallet(sync_client, keys, "  ", ["amex-gold"], CATALOG)


def test_list_and_delete(sync_client, keys):
    set_wallet(sync_client, keys, "zoe", ["discover-it-cash-back"], CATALOG)
    set_wallet(sync_client, keys, "adam", ["amex-gold"], CATALOG)
    assert list_wallets(sync_client, keys) == {"adam": ["amex-gold"], "zoe": ["discover-it-cash-back"]}
    assert delete_wallet(sync_client, keys, "zoe") is True
    assert list_wallets(sync_client, keys) == {"adam": ["amex-gold"]}
    assert not sync_client.sismember(keys.wallet_index, "zoe")


def test_list_drops_index_entries_without_a_wallet(sync_client, keys):
    set_wallet(sync_client, keys, "gone", ["amex-gold"], CATALOG)
    sync_client.delete(keys.wallet("gone"))
    assert list_wallets(sync_client, keys) == {}
    assert not sync_client.sismember(keys.wallet_index, "gone")


def test_demo_wallets_are_created_once(sync_client, keys):
    created = ensure_demo_wallets(sync_client, keys, CATALOG)
    assert sorted(created) == sorted(DEMO_WALLETS)
    assert 3 <= len(created) <= 4
    for user, cards in DEMO_WALLETS.items():
        assert get_wallet(sync_client, keys, user) == list(cards)
    assert ensure_demo_wallets(sync_client, keys, CATALOG) == []
    # Deleting them does not bring them back on the next run.
    for user in DEMO_WALLETS:
        delete_wallet(sync_client, keys, user)
    assert ensure_demo_wallets(sync_client, keys, CATALOG) == []
    assert list_wallets(sync_client, keys) == {}


def test_no_demo_wallets_when_someone_already_has_a_wallet(sync_client, keys):
    set_wallet(sync_client, keys, "carol", ["amex-gold"], CATALOG)
    assert ensure_demo_wallets(sync_client, keys, CATALOG) == []
    assert list_wallets(sync_client, keys) == {"carol": ["amex-gold"]}


def test_demo_wallet_cards_are_in_the_catalog():
    for cards in DEMO_WALLETS.values():
        for card_id in cards:
            assert CATALOG.get(card_id).card_id == card_id


async def test_fetch_wallets_reads_a_batch_in_one_round_trip(redis_url, sync_client, keys):
    set_wallet(sync_client, keys, "u1", ["amex-gold"], CATALOG)
    set_wallet(sync_client, keys, "u2", ["chase-sapphire-reserve", "chase-freedom-unlimited"], CATALOG)
    sync_client.set(keys.wallet("legacy"), orjson.dumps(["citi-double-cash"]))  # a bare list still reads
    sync_client.set(keys.wallet("broken"), b"{not json")

    aclient = aioredis.Redis.from_url(redis_url)  # bytes replies, as the consumer's client
    commands: list[str] = []
    original = aclient.execute_command

    async def counting(*args, **kwargs):
        commands.append(str(args[0]))
        return await original(*args, **kwargs)

    aclient.execute_command = counting
    try:
        wallets = await fetch_wallets(aclient, keys, ["u1", "u2", "nobody", "u1", "legacy", "broken"])
    finally:
        await aclient.aclose()
    assert commands == ["MGET"]
    assert wallets == {
        "u1": ["amex-gold"],
        "u2": ["chase-sapphire-reserve", "chase-freedom-unlimited"],
        "nobody": None,
        "legacy": ["citi-double-cash"],
        "broken": None,
    }


async def test_fetch_wallets_with_no_users_sends_nothing(redis_url, keys):
    aclient = aioredis.Redis.from_url(redis_url)
    try:
        assert await fetch_wallets(aclient, keys, []) == {}
    finally:
        await aclient.aclose()


def test_concurrent_change_is_not_lost(sync_client, redis_url, keys):
    """A change made by another client between the read and the write makes the update run again on it."""
    set_wallet(sync_client, keys, "u-race", ["chase-freedom-flex"], CATALOG)
    other = redis.Redis.from_url(redis_url)
    seen = []

    def add_card(record):
        seen.append(sorted(record.activations))
        if len(seen) == 1:
            activate_quarter(other, keys, "u-race", "chase-freedom-flex", "2026Q4", CATALOG)
        record.cards = [*record.cards, "amex-gold"]
        return record

    try:
        update_wallet_record(sync_client, keys, "u-race", add_card)
    finally:
        other.close()

    stored = get_wallet_record(sync_client, keys, "u-race")
    assert seen == [[], ["chase-freedom-flex"]]
    assert stored.cards == ["chase-freedom-flex", "amex-gold"]
    assert stored.activations == {"chase-freedom-flex": ["2026Q4"]}


def test_failed_change_writes_nothing(sync_client, keys):
    set_wallet(sync_client, keys, "u-keep", ["amex-gold"], CATALOG)

    with pytest.raises(ValueError, match="does not hold chase-freedom-flex"):
        activate_quarter(sync_client, keys, "u-keep", "chase-freedom-flex", "2026Q4", CATALOG)

    assert get_wallet_record(sync_client, keys, "u-keep").activations == {}


def test_replaced_card_loses_its_activations(sync_client, keys):
    set_wallet(sync_client, keys, "u-swap", ["chase-freedom-flex", "discover-it-cash-back"], CATALOG)
    activate_quarter(sync_client, keys, "u-swap", "chase-freedom-flex", "2026Q4", CATALOG)
    activate_quarter(sync_client, keys, "u-swap", "discover-it-cash-back", "2026Q4", CATALOG)

    set_wallet(sync_client, keys, "u-swap", ["discover-it-cash-back", "amex-gold"], CATALOG)

    assert get_wallet_record(sync_client, keys, "u-swap").activations == {"discover-it-cash-back": ["2026Q4"]}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("   ", "user id is empty; pass the user_id the transactions carry"),
        (42, "user id 42 is not text but int; pass the user_id as text"),
        ("u" * 300, "is 300 characters, longer than"),
    ],
)
def test_check_user_id_names_fix(value, message):
    from rewardpilot.wallets import check_user_id

    with pytest.raises(ValueError, match=re.escape(message)):
        check_user_id(value)
