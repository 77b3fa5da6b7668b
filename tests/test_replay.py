"""Replay: a range of the transactions stream processed again as a named run."""

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
from rewardpilot.replay import (
    Comparison, InvalidReplayError, ReplayBusyError, ReplayRange, parse_position, parse_range, replay,
    replay_async,
)
from rewardpilot.results import read_results
from rewardpilot.wallets import set_wallet

# 2026-11-01T00:00:00Z in milliseconds; entry i is added at this time plus i minutes.
BASE_MS = 1_793_491_200_000
MINUTE_MS = 60_000


def group_names(client, stream: str) -> list[str]:
    return [group["name"] for group in client.xinfo_groups(stream)]


def entry_id(index: int) -> str:
    return f"{BASE_MS + index * MINUTE_MS}-0"


def add_transactions(client: redis.Redis, keys, count: int) -> None:
    """Add ``count`` $20.00 grocery purchases at fixed ids, alternating users u1 and u2."""
    for index in range(count):
        transaction = Transaction(
            transaction_id=f"r-{index:03d}", user_id=f"u{index % 2 + 1}", merchant="Corner Grocer",
            category="groceries", amount_usd=Decimal("20.00"), mcc="5411",
            timestamp=datetime(2026, 11, 1, tzinfo=timezone.utc) + timedelta(minutes=index),
        )
        client.xadd(keys.transactions, encode_transaction(transaction), id=entry_id(index))


def run_live(url: str, keys) -> None:
    async def main():
        client = aioredis.Redis.from_url(url)
        try:
            pool = ConsumerPool(client, ConsumerSettings(keys=keys, workers=1, block_ms=100, drain=True))
            await asyncio.wait_for(pool.run(), timeout=60)
        finally:
            await client.aclose()

    asyncio.run(main())


def transaction_ids(client: redis.Redis, stream: str) -> list[str]:
    return sorted(result.transaction_id for result in read_results(client, stream))


# Parsing bounds

def test_position_bare_milliseconds():
    assert parse_position("1700000000000") == "1700000000000-0"
    assert parse_position("1700000000000", end=True) == "1700000000000-18446744073709551615"


def test_position_entry_id_kept():
    assert parse_position("1700000000000-7") == "1700000000000-7"
    assert parse_position(" 1700000000000-7 ", end=True) == "1700000000000-7"


def test_position_iso_times():
    # 1,700,000,000 s after the epoch is 2023-11-14T22:13:20Z.
    assert parse_position("2023-11-14T22:13:20Z") == "1700000000000-0"
    assert parse_position("2023-11-14T22:13:20") == "1700000000000-0"
    assert parse_position("2023-11-14T23:13:20+01:00") == "1700000000000-0"
    assert parse_position("2023-11-14T22:13:20.250Z", end=True) == "1700000000250-18446744073709551615"


@pytest.mark.parametrize("text", ["yesterday", "17000-00-01", "-5", "2023-13-01T00:00:00Z", ""])
def test_position_invalid_names_value(text):
    with pytest.raises(InvalidReplayError) as raised:
        parse_position(text)
    assert repr(text) in str(raised.value)


def test_range_end_before_start():
    with pytest.raises(InvalidReplayError, match="before start"):
        parse_range("1700000000001-0", "1700000000000")


def test_group_starts_before_start():
    assert ReplayRange("1700000000000-3").group_start_id == "1700000000000-2"
    assert ReplayRange("1700000000000-0").group_start_id == "1699999999999-18446744073709551615"
    assert ReplayRange("0-0").group_start_id == "0-0"


@pytest.mark.parametrize("run", ["live", "", "has space", "-dash-first", "x" * 65])
def test_invalid_run_name(redis_url, keys, run):
    with pytest.raises(InvalidReplayError, match="run name"):
        replay(redis_url, keys, start="0", run=run)


# Replays against a real server

def test_replay_of_busy_run_refused(redis_url, keys, sync_client):
    """While one replay of a run holds its lease, a second one fails at once and touches no group."""
    add_transactions(sync_client, keys, 5)
    holder = json.dumps({"holder": "host-a-123-x", "since": "2026-12-05T07:00:00Z"})
    sync_client.set(f"{keys.base}replay-lock:busy", holder, px=60_000)

    with pytest.raises(ReplayBusyError) as refused:
        replay(redis_url, keys, start="0", run="busy")

    assert refused.value.holder == "host-a-123-x"
    assert "run 'busy' is already being replayed by host-a-123-x since 2026-12-05T07:00:00Z" in str(refused.value)
    assert "replay:busy" not in group_names(sync_client, keys.transactions)
    assert sync_client.xlen(keys.results("busy")) == 0


def test_replay_releases_its_lease(redis_url, keys, sync_client):
    add_transactions(sync_client, keys, 5)

    first = replay(redis_url, keys, start="0", run="again")
    second = replay(redis_url, keys, start="0", run="again")

    assert (first.results, second.results, second.duplicates) == (5, 0, 5)
    assert sync_client.exists(f"{keys.base}replay-lock:again") == 0


def test_replay_range_by_id(redis_url, keys, sync_client):
    add_transactions(sync_client, keys, 30)

    summary = replay(redis_url, keys, start=entry_id(5), end=str(BASE_MS + 7 * MINUTE_MS), run="by-id")

    assert summary.results == 3
    assert summary.delivered == 3
    assert summary.read_past_end == 22
    assert transaction_ids(sync_client, keys.results("by-id")) == ["r-005", "r-006", "r-007"]
    # A finished replay deletes its group, so it never holds back trimming.
    assert "replay:by-id" not in group_names(sync_client, keys.transactions)


@pytest.mark.parametrize(("start", "end"), [
    ("2030-01-01", None),
    ("2030-01-01", "2030-02-01"),
    (str(BASE_MS + 2 * MINUTE_MS + 1), None),  # one millisecond after the last entry
])
def test_replay_after_last_entry(redis_url, keys, sync_client, start, end):
    add_transactions(sync_client, keys, 3)

    async def main():
        client = aioredis.Redis.from_url(redis_url)
        try:
            # Bounded: before the fix this replay waited for new entries without end.
            return await asyncio.wait_for(replay_async(client, keys, start=start, end=end, run="later"), timeout=30)
        finally:
            await client.aclose()

    summary = asyncio.run(main())

    assert summary.delivered == 0
    assert summary.results == 0
    assert "replay:later" not in group_names(sync_client, keys.transactions)


def test_replay_range_by_iso_time(redis_url, keys, sync_client):
    add_transactions(sync_client, keys, 30)

    summary = replay(redis_url, keys, start="2026-11-01T00:10:00Z", end="2026-11-01T00:19:00", run="by-time")

    assert summary.results == 10
    assert transaction_ids(sync_client, keys.results("by-time")) == [f"r-{i:03d}" for i in range(10, 20)]
    results = list(read_results(sync_client, keys.results("by-time")))
    assert {result.run for result in results} == {"by-time"}


def test_replay_same_millisecond_entries(redis_url, keys, sync_client):
    add_transactions(sync_client, keys, 1)
    for sequence in (1, 2):
        transaction = Transaction(transaction_id=f"same-{sequence}", user_id="u1", merchant="Corner Grocer",
                                  category="groceries", amount_usd=Decimal("5.00"), mcc="5411")
        sync_client.xadd(keys.transactions, encode_transaction(transaction), id=f"{BASE_MS}-{sequence}")

    summary = replay(redis_url, keys, start=f"{BASE_MS}-1", run="same-ms")

    assert summary.results == 2
    assert transaction_ids(sync_client, keys.results("same-ms")) == ["same-1", "same-2"]


def test_replay_user_filter(redis_url, keys, sync_client):
    add_transactions(sync_client, keys, 20)

    summary = replay(redis_url, keys, start=entry_id(0), end=entry_id(9), user="u1", run="only-u1")

    assert summary.results == 5
    assert transaction_ids(sync_client, keys.results("only-u1")) == [f"r-{i:03d}" for i in (0, 2, 4, 6, 8)]
    assert "replay:only-u1" not in group_names(sync_client, keys.transactions)


def test_replay_twice_no_duplicates(redis_url, keys, sync_client):
    add_transactions(sync_client, keys, 30)

    first = replay(redis_url, keys, start=entry_id(10), end=entry_id(19), run="again")
    second = replay(redis_url, keys, start=entry_id(10), end=entry_id(19), run="again")

    assert first.results == 10
    assert second.results == 0
    assert second.duplicates == 10
    assert sync_client.xlen(keys.results("again")) == 10


def test_replay_leaves_live_group_alone(redis_url, keys, sync_client):
    add_transactions(sync_client, keys, 20)
    sync_client.xgroup_create(keys.transactions, keys.group(), id="0")
    held = sync_client.xreadgroup(keys.group(), "live-consumer", {keys.transactions: ">"}, count=5)[0][1]
    before = sync_client.xinfo_groups(keys.transactions)[0]

    replay(redis_url, keys, start=entry_id(0), run="beside-live")

    after = [group for group in sync_client.xinfo_groups(keys.transactions) if group["name"] == keys.group()][0]
    assert after["last-delivered-id"] == before["last-delivered-id"] == held[-1][0]
    assert after["pending"] == 5
    pending = sync_client.xpending_range(keys.transactions, keys.group(), "-", "+", 10)
    assert [row["message_id"] for row in pending] == [entry for entry, _ in held]
    assert {row["consumer"] for row in pending} == {"live-consumer"}
    assert sync_client.xlen(keys.results()) == 0
    assert sync_client.xlen(keys.results("beside-live")) == 20


async def test_cancelled_replay_reports_counts(redis_url, keys, sync_client):
    add_transactions(sync_client, keys, 1000)
    client = aioredis.Redis.from_url(redis_url)
    stopped = []
    task = asyncio.create_task(replay_async(client, keys, start="0", run="cut", batch_size=1, block_ms=50,
                                            compare=True, on_cancelled=stopped.append))
    try:
        for _ in range(3000):  # bounded: at most 30 s
            if sync_client.exists(keys.results("cut")) and sync_client.xlen(keys.results("cut")) >= 5:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await client.aclose()

    assert len(stopped) == 1
    assert stopped[0].run == "cut"
    assert stopped[0].results == sync_client.xlen(keys.results("cut"))
    assert 5 <= stopped[0].results < 1000
    assert stopped[0].comparison is None


def test_compare_totals_two_decimals_without_matches():
    assert Comparison().as_dict()["live_total_usd"] == "0.00"
    assert Comparison().as_dict()["replay_total_usd"] == "0.00"
    assert Comparison().as_dict()["total_change_usd"] == "0.00"


def test_compare_reports_wallet_change(redis_url, keys, sync_client):
    catalog = RulesEngine.default().catalog
    add_transactions(sync_client, keys, 10)
    # Live: u1 holds Wells Fargo Active Cash, 2% on everything: $0.40 on $20.00.
    set_wallet(sync_client, keys, "u1", ["wells-fargo-active-cash"], catalog)
    run_live(redis_url, keys)
    # Replay: u1 holds Capital One Quicksilver, 1.5% on everything: $0.30 on $20.00.
    set_wallet(sync_client, keys, "u1", ["capital-one-quicksilver"], catalog)

    summary = replay(redis_url, keys, start=entry_id(0), run="new-wallet", compare=True)
    comparison = summary.comparison

    assert comparison.compared == 10
    assert comparison.missing_live == []
    assert [row.transaction_id for row in comparison.differences] == [f"r-{i:03d}" for i in (0, 2, 4, 6, 8)]
    row = comparison.differences[0]
    assert (row.live_card, row.replay_card) == ("wells-fargo-active-cash", "capital-one-quicksilver")
    assert (row.live_value_usd, row.replay_value_usd) == (Decimal("0.40"), Decimal("0.30"))
    assert comparison.total_change_usd == Decimal("-0.50")


def test_compare_counts_missing_live(redis_url, keys, sync_client):
    add_transactions(sync_client, keys, 4)

    summary = replay(redis_url, keys, start=entry_id(0), run="no-live", compare=True)

    assert summary.comparison.compared == 0
    assert summary.comparison.missing_live == ["r-000", "r-001", "r-002", "r-003"]
    assert summary.comparison.differences == []


def test_compare_skips_invalid_live_entry(redis_url, keys, sync_client):
    """A live results entry that is not a result is left out of the comparison, not fatal."""
    add_transactions(sync_client, keys, 4)
    sync_client.xadd(keys.results(), {"data": "{bad", "user_id": "u1", "transaction_id": "r-001"})
    run_live(redis_url, keys)

    summary = replay(redis_url, keys, start=entry_id(0), run="with-bad-entry", compare=True)

    assert summary.comparison.compared == 4
    assert summary.comparison.missing_live == []


# The command line

@one_server
def test_cli_replay_json(cli_env, keys, sync_client):
    add_transactions(sync_client, keys, 12)
    run_live(cli_env["REDIS_URL"], keys)

    completed = invoke_cli(["--prefix", keys.prefix, "replay", "--start", "2026-11-01T00:02:00Z",
                            "--end", entry_id(5), "--run", "cli-run", "--compare", "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["run"] == "cli-run"
    assert summary["results"] == 4
    assert summary["comparison"]["compared"] == 4
    assert summary["comparison"]["differing"] == 0
    assert summary["comparison"]["total_change_usd"] == "0.00"


@one_server
def test_cli_replay_table(cli_env, keys, sync_client):
    add_transactions(sync_client, keys, 3)
    run_live(cli_env["REDIS_URL"], keys)

    completed = invoke_cli(["--prefix", keys.prefix, "replay", "--start", entry_id(0), "--run", "table-run",
                            "--compare"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "3 new results" in completed.stdout
    assert "0 of 3 differ" in completed.stdout
    assert "earlier replay" not in completed.stderr


@one_server
def test_cli_replay_again_notes_old_results(cli_env, keys, sync_client):
    add_transactions(sync_client, keys, 3)
    run_live(cli_env["REDIS_URL"], keys)
    command = ["--prefix", keys.prefix, "replay", "--start", entry_id(0), "--run", "again-run", "--compare"]
    assert invoke_cli(command, cli_env).returncode == 0

    completed = invoke_cli(command, cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "0 new results" in completed.stdout
    assert "note: 3 entries keep their results from an earlier replay of run again-run" in \
        " ".join(completed.stderr.split())


@one_server
def test_cli_replay_bad_start(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "replay", "--start", "last-tuesday", "--run", "x"], cli_env)

    assert completed.returncode == 2
    assert "'last-tuesday'" in completed.stderr
    assert "ISO 8601" in completed.stderr


@one_server
def test_cli_replay_empty_range_explained(cli_env, keys, sync_client):
    add_transactions(sync_client, keys, 3)

    completed = invoke_cli(["--prefix", keys.prefix, "replay", "--start", "2025-01-01", "--end", "2025-01-31",
                            "--run", "empty-run"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "no entries in the range" in completed.stderr
    assert "times of publishing, not purchase dates" in completed.stderr
    assert "published from 2026-11-01T00:00:00Z to 2026-11-01T00:02:00Z" in completed.stderr
