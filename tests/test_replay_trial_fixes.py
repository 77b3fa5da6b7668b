"""Replay: marker lifetime, mid-stream starts, id bounds, empty ranges, exit codes and the run lock.

Cap figures come from the catalog's Amex Blue Cash Preferred: 6% at U.S.
supermarkets on up to $6,000 a calendar year, then 1%. Wells Fargo Active
Cash earns 2% on everything. Three $3,000.00 grocery purchases by u1 in
November 2026 therefore earn $180.00 (Blue Cash), $180.00 (Blue Cash, the
cap now used up) and $60.00 (Active Cash) in the live run.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import redis
import redis.asyncio as aioredis

from conftest import invoke_cli, one_server
from consumer.pool import ConsumerPool
from consumer.settings import ConsumerSettings
from rewardpilot.codec import encode_transaction
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction
from rewardpilot.partitions import count_key
from rewardpilot.replay import MAX_SEQUENCE, InvalidReplayError, ReplayBusyError, parse_position, replay
from rewardpilot.results import read_results
from rewardpilot.streams import StreamKeys
from rewardpilot.wallets import set_wallet

# 2026-11-01T00:00:00Z in milliseconds; entry i is added at this time plus i minutes.
BASE_MS = 1_793_491_200_000
MINUTE_MS = 60_000
CAPPED_WALLET = ["amex-blue-cash-preferred", "wells-fargo-active-cash"]
TOO_LARGE = MAX_SEQUENCE + 1  # 18446744073709551616, one above the largest id part


def entry_id(index: int) -> str:
    return f"{BASE_MS + index * MINUTE_MS}-0"


def add_groceries(client: redis.Redis, keys: StreamKeys, count: int, *, amount: str = "20.00",
                  stream: str | None = None, first: int = 0) -> None:
    """Add ``count`` grocery purchases by u1 at fixed ids, entry i published i minutes after BASE_MS."""
    for index in range(first, first + count):
        transaction = Transaction(
            transaction_id=f"g-{index:03d}", user_id="u1", merchant="KROGER #512", category="groceries",
            amount_usd=Decimal(amount), mcc="5411",
            timestamp=datetime(2026, 11, 1, tzinfo=timezone.utc) + timedelta(minutes=index),
        )
        client.xadd(stream or keys.transactions, encode_transaction(transaction), id=entry_id(index))


def run_live(url: str, keys: StreamKeys) -> None:
    async def main():
        client = aioredis.Redis.from_url(url)
        try:
            pool = ConsumerPool(client, ConsumerSettings(keys=keys, workers=1, block_ms=100, drain=True))
            await asyncio.wait_for(pool.run(), timeout=60)
        finally:
            await client.aclose()

    asyncio.run(main())


def ttls(client: redis.Redis, pattern: str) -> list[int]:
    return sorted(client.ttl(name) for name in client.scan_iter(match=pattern, count=1000))


def words(text: str) -> str:
    """Join wrapped output into single spaces, so a check does not depend on the terminal width."""
    return " ".join(text.replace("│", " ").split())


def replay_cli(keys: StreamKeys, cli_env, *options: str):
    return invoke_cli(["--prefix", keys.prefix, "replay", *options], cli_env)


# A replay outside a job keeps its markers and cap spend as long as its results stream

def test_replay_markers_never_expire(redis_url, keys, sync_client):
    set_wallet(sync_client, keys, "u1", CAPPED_WALLET, RulesEngine.default().catalog)
    add_groceries(sync_client, keys, 4)

    summary = replay(redis_url, keys, start="0", run="kept")

    assert summary.results == 4
    assert ttls(sync_client, keys.result_marker("kept", "*")) == [-1, -1, -1, -1]
    assert sync_client.ttl(keys.results("kept")) == -1
    assert sync_client.exists(keys.cap_spend("u1", "kept")) == 1
    assert sync_client.ttl(keys.cap_spend("u1", "kept")) == -1


def test_replay_again_adds_nothing(redis_url, keys, sync_client):
    add_groceries(sync_client, keys, 5)

    first = replay(redis_url, keys, start="0", run="twice")
    second = replay(redis_url, keys, start="0", run="twice")

    assert (first.results, second.results, second.duplicates) == (5, 0, 5)
    assert sync_client.xlen(keys.results("twice")) == 5


def test_dead_letter_marker_never_expires(redis_url, keys, sync_client):
    bad_id = sync_client.xadd(keys.transactions, {"data": "not json"})

    summary = replay(redis_url, keys, start="0", run="bad")

    assert summary.dead_letters == 1
    assert sync_client.ttl(keys.result_marker("bad", f"entry:{bad_id}")) == -1


def test_live_consumer_markers_still_expire(redis_url, keys, sync_client):
    add_groceries(sync_client, keys, 2)

    run_live(redis_url, keys)

    default_ttl = ConsumerSettings().result_ttl_seconds
    assert all(default_ttl - 60 < ttl <= default_ttl for ttl in ttls(sync_client, keys.result_marker("live", "*")))


def test_settle_rejects_negative_marker_ttl(redis_url, keys, sync_client):
    """0 means no expiry in settle.lua; a negative TTL is still an error from SET EX."""
    from consumer.settle import Settler
    from rewardpilot.codec import decode_result

    add_groceries(sync_client, keys, 1)
    run_live(redis_url, keys)
    result = decode_result(sync_client.xrange(keys.results())[0][1])

    async def settle() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            settler = Settler(client, keys, run="negative", group=keys.group(), marker_ttl_seconds=-1)
            await settler.settle([(entry_id(0), result)], [])
        finally:
            await client.aclose()

    with pytest.raises(redis.ResponseError, match="invalid expire time"):
        asyncio.run(settle())

    assert sync_client.exists(keys.result_marker("negative", "g-000")) == 0
    assert sync_client.xlen(keys.results("negative")) == 0


@one_server
@pytest.mark.parametrize(("command", "option"), [("consume", "--marker-ttl"), ("run", "--keep")])
def test_zero_marker_ttl_rejected(cli_env, keys, tmp_path, command, option):
    """Only a replay outside a job gets markers without expiry; `consume` and `run` still reject 0."""
    source = tmp_path / "one.csv"
    source.write_text("transaction_id,user_id,merchant,amount,date\nz1,u1,SHELL,10.00,2026-11-01\n",
                      encoding="utf-8")
    arguments = ["--drain"] if command == "consume" else [str(source)]

    completed = invoke_cli(["--prefix", keys.prefix, command, *arguments, option, "0"], cli_env)

    assert completed.returncode == 2, completed.stderr[-2000:]
    assert f"{option}: age '0' is invalid" in words(completed.stderr)


# A replay that starts after the stream's first entry warns that cap spend starts from zero

def capped_live_run(url: str, keys: StreamKeys, client: redis.Redis) -> None:
    set_wallet(client, keys, "u1", CAPPED_WALLET, RulesEngine.default().catalog)
    add_groceries(client, keys, 3, amount="3000.00")
    run_live(url, keys)


def test_mid_stream_replay_differs_and_says_so(redis_url, keys, sync_client):
    capped_live_run(redis_url, keys, sync_client)

    mid = replay(redis_url, keys, start=entry_id(2), run="mid", compare=True)
    full = replay(redis_url, keys, start=entry_id(0), run="full", compare=True)

    assert mid.starts_after_first_entry is True
    assert mid.first_entry_id == entry_id(0)
    assert mid.as_dict()["starts_after_first_entry"] is True
    row = mid.comparison.differences[0]
    assert (row.live_card, row.replay_card) == ("wells-fargo-active-cash", "amex-blue-cash-preferred")
    assert (row.live_value_usd, row.replay_value_usd) == (Decimal("60.00"), Decimal("180.00"))
    assert full.starts_after_first_entry is False
    assert full.comparison.differences == []


def test_replay_from_before_stream_no_warning(redis_url, keys, sync_client):
    add_groceries(sync_client, keys, 2)

    summary = replay(redis_url, keys, start="0", run="from-zero")

    assert summary.first_entry_id == entry_id(0)
    assert summary.starts_after_first_entry is False


@one_server
def test_cli_mid_stream_warning(cli_env, keys, sync_client):
    capped_live_run(cli_env["REDIS_URL"], keys, sync_client)

    mid = replay_cli(keys, cli_env, "--start", entry_id(2), "--run", "mid", "--compare")
    full = replay_cli(keys, cli_env, "--start", entry_id(0), "--run", "full", "--compare")

    assert mid.returncode == 0, mid.stderr[-2000:]
    warning = words(mid.stderr)
    assert f"warning: the replay starts at {entry_id(2)}, after the first entry of {keys.transactions}" in warning
    assert f"({entry_id(0)}, published 2026-11-01T00:00:00Z)" in warning
    assert "counted from zero" in warning
    assert "start at the first entry of the earliest cap period of interest" in warning
    assert "1 of 1 differ" in mid.stdout
    assert full.returncode == 0, full.stderr[-2000:]
    assert "warning" not in full.stderr
    assert "0 of 3 differ" in full.stdout


# Both parts of an entry id must fit in 64 bits

@pytest.mark.parametrize(("text", "part", "value"), [
    (f"1796491948514-{TOO_LARGE}", "sequence number", TOO_LARGE),
    (f"{TOO_LARGE}-0", "milliseconds", TOO_LARGE),
    (str(TOO_LARGE), "milliseconds", TOO_LARGE),
])
@pytest.mark.parametrize("end", [False, True])
def test_position_part_above_64_bits(text, part, value, end):
    with pytest.raises(InvalidReplayError) as raised:
        parse_position(text, end=end)

    message = str(raised.value)
    assert message.startswith(f"{'end' if end else 'start'} {text!r} is not a valid stream id")
    assert f"its {part} {value} is above {MAX_SEQUENCE}" in message
    assert f"whole numbers from 0 to {MAX_SEQUENCE}" in message


def test_position_largest_parts_accepted():
    assert parse_position(f"{MAX_SEQUENCE}-{MAX_SEQUENCE}") == f"{MAX_SEQUENCE}-{MAX_SEQUENCE}"
    assert parse_position(str(MAX_SEQUENCE), end=True) == f"{MAX_SEQUENCE}-{MAX_SEQUENCE}"
    assert parse_position("0-0") == "0-0"


@one_server
@pytest.mark.parametrize("compare", [[], ["--compare"]])
def test_cli_sequence_overflow_rejected(cli_env, keys, sync_client, compare):
    add_groceries(sync_client, keys, 3)

    completed = replay_cli(keys, cli_env, "--start", f"{BASE_MS}-{TOO_LARGE}", "--run", "ovf", *compare)

    assert completed.returncode == 2, completed.stderr[-2000:]
    message = words(completed.stderr)
    assert f"start '{BASE_MS}-{TOO_LARGE}' is not a valid stream id" in message
    assert "Traceback" not in completed.stderr
    assert sync_client.exists(keys.results("ovf")) == 0


# Bounds are publish times, and an empty range explains whether it was trimmed

@one_server
def test_cli_help_names_publish_time(cli_env, keys):
    completed = replay_cli(keys, cli_env, "--help")

    assert completed.returncode == 0
    text = words(completed.stdout)
    assert "First entry, by publish time, not purchase time" in text
    assert "Exits 1 when entries were dead-lettered" in text


@one_server
def test_cli_trimmed_range_explained(cli_env, keys, sync_client):
    add_groceries(sync_client, keys, 5)
    sync_client.xtrim(keys.transactions, minid=entry_id(3), approximate=False)

    completed = replay_cli(keys, cli_env, "--start", entry_id(0), "--end", entry_id(1), "--run", "gone")

    assert completed.returncode == 0, completed.stderr[-2000:]
    message = words(completed.stderr)
    assert (f"no entries in the range: it ends before the first entry of {keys.transactions}, {entry_id(3)} "
            "(published 2026-11-01T00:03:00Z)") in message
    assert "3 entries of it were trimmed or deleted, so the range was trimmed or nothing was published in it" in message
    assert "times of publishing, not purchase dates" in message


@one_server
def test_cli_range_never_published(cli_env, keys, sync_client):
    add_groceries(sync_client, keys, 3)

    completed = replay_cli(keys, cli_env, "--start", "2025-01-01", "--end", "2025-01-31", "--run", "early")

    assert completed.returncode == 0, completed.stderr[-2000:]
    message = words(completed.stderr)
    assert f"it ends before the first entry of {keys.transactions}, {entry_id(0)}" in message
    assert "no entry was ever trimmed or deleted from it, so nothing was published in the range" in message


@one_server
def test_cli_fully_trimmed_stream(cli_env, keys, sync_client):
    add_groceries(sync_client, keys, 4)
    sync_client.xtrim(keys.transactions, maxlen=0, approximate=False)

    completed = replay_cli(keys, cli_env, "--start", "0", "--run", "emptied")

    assert completed.returncode == 0, completed.stderr[-2000:]
    message = words(completed.stderr)
    assert f"no entries to replay: {keys.transactions} is empty: all 4 entries published to it were trimmed" in message
    assert f"the last one was {entry_id(3)} (2026-11-01T00:03:00Z)" in message


@one_server
def test_cli_never_published_stream(cli_env, keys):
    completed = replay_cli(keys, cli_env, "--start", "0", "--run", "nothing")

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"{keys.transactions} is empty: nothing was published to it" in words(completed.stderr)


@one_server
def test_cli_partitioned_range_explained(cli_env, keys, sync_client):
    """With partitions the entries sit in transactions:pN, and the explanation reads those streams."""
    sync_client.set(count_key(keys), 2)
    add_groceries(sync_client, keys, 2, stream=f"{keys.transactions}:p0")
    add_groceries(sync_client, keys, 2, stream=f"{keys.transactions}:p1", first=2)

    completed = replay_cli(keys, cli_env, "--start", "2025-01-01", "--end", "2025-01-31", "--run", "parts")

    assert completed.returncode == 0, completed.stderr[-2000:]
    message = words(completed.stderr)
    assert f"it ends before the first entry of {keys.transactions}:p0 to p1, {entry_id(0)}" in message
    assert "published from 2026-11-01T00:00:00Z to 2026-11-01T00:03:00Z" in message


# A job id with no streams is rejected before the replay creates any

@one_server
def test_cli_unknown_job_rejected(cli_env, keys, sync_client):
    replayed = replay_cli(keys, cli_env, "--job", "nosuch", "--start", "0", "--run", "x")

    assert replayed.returncode == 2, replayed.stderr[-2000:]
    assert f"no job 'nosuch' under prefix '{keys.prefix}'" in words(replayed.stderr)
    assert list(sync_client.scan_iter(match=f"{keys.prefix}*", count=1000)) == []
    for command in (["report", "--user", "u1", "--year", "2026"], ["status"]):
        completed = invoke_cli(["--prefix", keys.prefix, *command, "--job", "nosuch"], cli_env)
        assert completed.returncode == 2, (command, completed.stderr[-2000:])
        assert "no job 'nosuch'" in completed.stderr


# Dead letters make the exit code 1

@one_server
@pytest.mark.parametrize("as_json", [[], ["--json"]])
def test_cli_dead_letters_exit_1(cli_env, keys, sync_client, as_json):
    add_groceries(sync_client, keys, 2)
    sync_client.xadd(keys.transactions, {"data": "not json"})

    completed = replay_cli(keys, cli_env, "--start", "0", "--run", "dead", *as_json)

    assert completed.returncode == 1, completed.stderr[-2000:]
    assert "1 entry was dead-lettered; see them with `rewardpilot dlq list`" in words(completed.stderr)
    if as_json:
        summary = json.loads(completed.stdout.strip().splitlines()[-1])
        assert (summary["results"], summary["dead_letters"]) == (2, 1)
    else:
        assert "run dead: 2 new results, 1 dead letter" in words(completed.stdout)
    assert len(list(read_results(sync_client, keys.results("dead")))) == 2


# The lock of a killed replay expires, and the message gives the seconds left

def test_busy_message_gives_expiry(redis_url, keys, sync_client):
    holder = json.dumps({"holder": "host-b-7-y", "since": "2026-12-05T07:00:00Z"})
    sync_client.set(f"{keys.base}replay-lock:killed", holder, px=20_000)

    with pytest.raises(ReplayBusyError) as refused:
        replay(redis_url, keys, start="0", run="killed")

    assert 0 < refused.value.expires_in_ms <= 20_000
    message = str(refused.value)
    assert "run 'killed' is already being replayed by host-b-7-y since 2026-12-05T07:00:00Z" in message
    assert "A running replay renews its lock every 10 s for 30 s" in message
    assert "if that replay was killed, the lock expires in 20 s" in message


def test_busy_lock_without_expiry(redis_url, keys, sync_client):
    lock = f"{keys.base}replay-lock:stuck"
    sync_client.set(lock, "not a token")

    with pytest.raises(ReplayBusyError) as refused:
        replay(redis_url, keys, start="0", run="stuck")

    assert refused.value.expires_in_ms == -1
    assert "by another process" in str(refused.value)
    assert f"The lock {lock} has no expiry; if no replay of this run is running, delete that key" in str(refused.value)


@one_server
def test_cli_busy_exit_2(cli_env, keys, sync_client):
    sync_client.set(f"{keys.base}replay-lock:held", json.dumps({"holder": "h", "since": "s"}), px=30_000)

    completed = replay_cli(keys, cli_env, "--start", "0", "--run", "held")

    assert completed.returncode == 2
    message = words(completed.stderr)
    assert "run 'held' is already being replayed by h since s" in message
    assert "the lock expires in" in message
