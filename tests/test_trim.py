"""Retention: trimming by MINID never removes entries a consumer group still needs."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from conftest import ROOT, invoke_cli, one_server
from rewardpilot.retention import InvalidAgeError, parse_age, trim, trim_loop

# 2020-09-13T12:26:40Z: entries this old are past any age the tests ask for.
OLD_MS = 1_600_000_000_000
GROUP = "g"


def old_id(index: int) -> str:
    return f"{OLD_MS + index * 1000}-0"


def add_entries(client, stream: str, old: int = 10, recent: int = 3) -> None:
    for index in range(old):
        client.xadd(stream, {"data": f"old-{index}"}, id=old_id(index))
    for index in range(recent):
        client.xadd(stream, {"data": f"recent-{index}"})


def read_and_ack(client, stream: str, count: int, keep_pending: set[int] = frozenset()) -> None:
    client.xgroup_create(stream, GROUP, id="0")
    read = client.xreadgroup(GROUP, "c1", {stream: ">"}, count=count)[0][1]
    acked = [entry for index, (entry, _) in enumerate(read) if index not in keep_pending]
    client.xack(stream, GROUP, *acked)


def run_trim(url: str, stream: str, age: str = "1d", dry_run: bool = False):
    async def main():
        client = aioredis.Redis.from_url(url)
        try:
            return await trim(client, stream, parse_age(age), dry_run=dry_run)
        finally:
            await client.aclose()

    return asyncio.run(main())


def data_of(client, stream: str) -> list[str]:
    return [fields["data"] for _, fields in client.xrange(stream)]


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("12h", 43_200), ("30d", 2_592_000),
                                           ("2w", 1_209_600), (" 7 d ", 604_800)])
def test_parse_age_units(text, seconds):
    assert parse_age(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["30", "d", "0d", "-1d", "1.5d", "30 days", "1y", ""])
def test_parse_age_invalid(text):
    with pytest.raises(InvalidAgeError) as raised:
        parse_age(text)
    assert repr(text) in str(raised.value)


def test_trim_without_groups_keeps_all(redis_url, keys, sync_client):
    """No consumer group has read a stream that publish made, so every entry is unread and kept."""
    add_entries(sync_client, keys.transactions)

    report = run_trim(redis_url, keys.transactions)

    assert report.removed == 0
    assert report.no_consumer_group is True
    assert report.held_back_count == 10
    assert report.held_back_by is None
    assert len(data_of(sync_client, keys.transactions)) == 13


@one_server
def test_cli_trim_after_publish_only(keys, cli_env, tmp_path):
    source = tmp_path / "gas.csv"
    source.write_text("transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
                      "g1,u1,SHELL OIL 5744,gas,10.00,5541,2026-11-10T13:00:00Z\n")
    assert invoke_cli(["--prefix", keys.prefix, "publish", str(source)], cli_env).returncode == 0
    time.sleep(1.2)  # so the entry is older than the cutoff

    completed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "1s"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "removed 0 entries" in completed.stdout
    assert "no consumer group has read" in " ".join(completed.stdout.split())
    assert "no entry is older than the cutoff" not in completed.stdout  # one entry is


def test_trim_replay_group_only_keeps_all(redis_url, keys, sync_client):
    """A replay's reads do not make entries safe to trim while no live group has read them."""
    add_entries(sync_client, keys.transactions)
    sync_client.xgroup_create(keys.transactions, "replay:preview", id="0")
    read = sync_client.xreadgroup("replay:preview", "c1", {keys.transactions: ">"}, count=6)[0][1]
    sync_client.xack(keys.transactions, "replay:preview", *[entry for entry, _ in read[:4]])

    report = run_trim(redis_url, keys.transactions)

    assert report.removed == 0
    assert report.no_live_group is True
    assert report.no_consumer_group is False
    assert report.replay_groups == ["replay:preview"]
    assert report.held_back_by is None
    assert report.held_back_count == 10
    assert sync_client.xlen(keys.transactions) == 13


def test_trim_without_groups_no_live_group(redis_url, keys, sync_client):
    add_entries(sync_client, keys.transactions)

    report = run_trim(redis_url, keys.transactions, dry_run=True)

    assert report.no_live_group is True
    assert report.replay_groups == []


def test_trim_replay_group_behind_live(redis_url, keys, sync_client):
    """With a live group, a replay group still keeps the entries it has not read."""
    add_entries(sync_client, keys.transactions)
    read_and_ack(sync_client, keys.transactions, count=8)
    sync_client.xgroup_create(keys.transactions, "replay:slow", id=old_id(2))

    report = run_trim(redis_url, keys.transactions)

    assert report.removed == 3
    assert report.held_back_by == "replay:slow"
    assert report.no_live_group is False
    assert report.replay_groups == ["replay:slow"]


def test_trim_replay_ahead_of_live_group(redis_url, keys, sync_client):
    """A replay that read further than the live group lets the trim remove only what the live group read."""
    add_entries(sync_client, keys.transactions)
    read_and_ack(sync_client, keys.transactions, count=2)
    sync_client.xgroup_create(keys.transactions, "replay:ahead", id=old_id(8))

    report = run_trim(redis_url, keys.transactions)

    assert report.removed == 2
    assert report.held_back_by == GROUP
    assert data_of(sync_client, keys.transactions)[0] == "old-2"


@one_server
def test_cli_trim_replay_group_only_text(cli_env, keys, sync_client):
    add_entries(sync_client, keys.transactions)
    sync_client.xgroup_create(keys.transactions, "replay:preview", id=old_id(5))

    completed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "30d"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    text = " ".join(completed.stdout.split())
    assert f"{keys.transactions}: removed 0 entries" in text
    assert "no live consumer group has read" in text
    assert "only replay group 'replay:preview'" in text
    assert "kept all 10 entries older than the cutoff" in text
    assert "no entry is older than the cutoff" not in text
    assert sync_client.xlen(keys.transactions) == 13


@one_server
def test_cli_trim_stopped_replay_text(cli_env, keys, sync_client):
    """A replay group that holds the trim back is named with the two ways to release it."""
    add_entries(sync_client, keys.transactions)
    read_and_ack(sync_client, keys.transactions, count=8)
    sync_client.xgroup_create(keys.transactions, "replay:slow", id=old_id(2))

    completed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "30d"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    text = " ".join(completed.stdout.split())
    assert "consumer group 'replay:slow' held the trim back" in text
    assert "'replay:slow' is the group of replay run 'slow'" in text
    assert "rewardpilot replay --run slow ..." in text
    assert f'redis-cli -u "$REDIS_URL" XGROUP DESTROY {keys.transactions} replay:slow' in text


def test_redis_cli_hint_reaches_the_server_in_use(monkeypatch):
    """The embedded server is reached through `server cli`; another one through REDIS_URL, never its password."""
    from rewardpilot.cli.context import AppContext

    monkeypatch.delenv("REDIS_URL", raising=False)
    embedded = AppContext().redis_cli("XGROUP", "DESTROY", "rp:transactions", "replay:slow")
    monkeypatch.setenv("REDIS_URL", "redis://default:secret-pw@127.0.0.1:6390/0")
    from_env = AppContext().redis_cli("XGROUP", "DESTROY", "rp:transactions", "replay:slow")

    assert embedded.endswith("server cli XGROUP DESTROY rp:transactions replay:slow")
    assert from_env == 'redis-cli -u "$REDIS_URL" XGROUP DESTROY rp:transactions replay:slow'
    assert "secret-pw" not in from_env


@one_server
def test_cli_trim_live_group_text_names_no_replay(cli_env, keys, sync_client):
    add_entries(sync_client, keys.transactions)
    read_and_ack(sync_client, keys.transactions, count=2)

    completed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "30d"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    text = " ".join(completed.stdout.split())
    assert f"consumer group '{GROUP}' held the trim back" in text
    assert "XGROUP DESTROY" not in text


@one_server
def test_cli_trim_unread_group_text(cli_env, keys, sync_client):
    """A group that read nothing stops the trim at 0-1, and the output does not claim that nothing is old."""
    add_entries(sync_client, keys.transactions)
    sync_client.xgroup_create(keys.transactions, GROUP, id="0")

    completed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "30d"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    text = " ".join(completed.stdout.split())
    assert f"{keys.transactions}: removed 0 entries" in text
    assert "no entry is older than the cutoff" not in text
    assert "consumer group 'g' held the trim back to 0-1" in text
    assert "kept 10 entries older than the cutoff" in text


@one_server
def test_cli_trim_nothing_old_text(cli_env, keys, sync_client):
    add_entries(sync_client, keys.transactions, old=0, recent=2)

    completed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "30d"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "removed 0 entries; no entry is older than the cutoff" in completed.stdout
    assert "no consumer group has read" not in completed.stdout


def test_trim_keeps_unread_entries(redis_url, keys, sync_client):
    add_entries(sync_client, keys.transactions)
    read_and_ack(sync_client, keys.transactions, count=4)

    report = run_trim(redis_url, keys.transactions)

    assert report.removed == 4
    assert report.held_back_by == GROUP
    assert report.min_id == f"{OLD_MS + 3000}-1"
    assert data_of(sync_client, keys.transactions)[:2] == ["old-4", "old-5"]
    assert sync_client.xlen(keys.transactions) == 9


def test_trim_keeps_pending_entries(redis_url, keys, sync_client):
    add_entries(sync_client, keys.transactions)
    read_and_ack(sync_client, keys.transactions, count=6, keep_pending={2})

    report = run_trim(redis_url, keys.transactions)

    assert report.removed == 2
    assert report.held_back_by == GROUP
    assert data_of(sync_client, keys.transactions)[0] == "old-2"
    claimed = sync_client.xautoclaim(keys.transactions, GROUP, "c2", min_idle_time=0, start_id="0-0")
    assert [entry for entry, _ in claimed[1]] == [old_id(2)]
    assert claimed[2] == []  # no pending entry was deleted


def test_trim_unread_group_blocks_all(redis_url, keys, sync_client):
    add_entries(sync_client, keys.transactions)
    sync_client.xgroup_create(keys.transactions, GROUP, id="0")

    report = run_trim(redis_url, keys.transactions)

    assert report.removed == 0
    assert report.held_back_by == GROUP
    assert sync_client.xlen(keys.transactions) == 13


def test_trim_counts_held_back_entries(redis_url, keys, sync_client):
    add_entries(sync_client, keys.transactions)
    read_and_ack(sync_client, keys.transactions, count=6, keep_pending={2})

    report = run_trim(redis_url, keys.transactions)

    assert report.held_back_by == GROUP
    assert report.held_back_count == 8  # old-2 to old-9, because the recent entries are younger than the cutoff


def test_trim_fully_read_group_holds_nothing(redis_url, keys, sync_client):
    # Every entry is older than the cutoff and acknowledged. The group's limit is the id just
    # after the last entry, which is below the cutoff but keeps nothing.
    add_entries(sync_client, keys.transactions, old=10, recent=0)
    read_and_ack(sync_client, keys.transactions, count=10)

    report = run_trim(redis_url, keys.transactions, dry_run=True)

    assert report.removed == 10
    assert report.held_back_by is None
    assert report.held_back_count == 0
    assert report.min_id == f"{OLD_MS + 9000}-1"


def test_trim_slowest_group_wins(redis_url, keys, sync_client):
    add_entries(sync_client, keys.transactions)
    read_and_ack(sync_client, keys.transactions, count=8)
    sync_client.xgroup_create(keys.transactions, "slow", id=old_id(2))

    report = run_trim(redis_url, keys.transactions)

    assert report.removed == 3
    assert report.held_back_by == "slow"


def test_trim_spares_entries_younger_than_age(redis_url, keys, sync_client):
    add_entries(sync_client, keys.transactions, old=0, recent=5)

    report = run_trim(redis_url, keys.transactions, age="1h")

    assert report.removed == 0
    assert sync_client.xlen(keys.transactions) == 5


def test_trim_dry_run_removes_nothing(redis_url, keys, sync_client):
    add_entries(sync_client, keys.transactions)
    read_and_ack(sync_client, keys.transactions, count=4)

    report = run_trim(redis_url, keys.transactions, dry_run=True)

    assert report.dry_run is True
    assert report.removed == 4
    assert sync_client.xlen(keys.transactions) == 13


def test_trim_dry_run_age_before_epoch(redis_url, keys, sync_client):
    add_entries(sync_client, keys.transactions)

    report = run_trim(redis_url, keys.transactions, age="3000w", dry_run=True)  # 57 years: cutoff 0-0

    assert report.cutoff_id == "0-0"
    assert report.removed == 0
    assert report.held_back_by is None


def test_trim_missing_stream(redis_url, keys):
    report = run_trim(redis_url, keys.transactions)

    assert report.removed == 0
    assert report.held_back_by is None


async def test_trim_loop_trims_as_acked(redis_url, keys, sync_client):
    add_entries(sync_client, keys.transactions, old=5, recent=1)
    read_and_ack(sync_client, keys.transactions, count=5, keep_pending={2, 3, 4})
    client = aioredis.Redis.from_url(redis_url)
    stopping = asyncio.Event()
    task = asyncio.create_task(trim_loop(client, keys.transactions, timedelta(days=1), 0.05, stopping))
    try:
        # Bounded waits: 200 polls of 0.05 s each.
        for _ in range(200):
            if sync_client.xlen(keys.transactions) == 4:
                break
            await asyncio.sleep(0.05)
        assert data_of(sync_client, keys.transactions) == ["old-2", "old-3", "old-4", "recent-0"]

        sync_client.xack(keys.transactions, GROUP, old_id(2), old_id(3), old_id(4))
        for _ in range(200):
            if sync_client.xlen(keys.transactions) == 1:
                break
            await asyncio.sleep(0.05)
    finally:
        stopping.set()
        await asyncio.wait_for(task, timeout=5)
        await client.aclose()

    assert data_of(sync_client, keys.transactions) == ["recent-0"]


@one_server
def test_cli_trim_json(cli_env, keys, sync_client):
    add_entries(sync_client, keys.transactions)
    read_and_ack(sync_client, keys.transactions, count=4)

    completed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "30d", "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["removed"] == 4
    assert report["held_back_by"] == GROUP


@one_server
def test_cli_trim_dry_run_text(cli_env, keys, sync_client):
    add_entries(sync_client, keys.transactions)
    read_and_ack(sync_client, keys.transactions, count=4)

    completed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "30d", "--dry-run"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "would remove 4 entries" in completed.stdout
    assert "'g' held the trim back" in completed.stdout
    assert sync_client.xlen(keys.transactions) == 13


@one_server
def test_cli_trim_names_entries_kept(cli_env, keys, sync_client):
    add_entries(sync_client, keys.transactions)
    read_and_ack(sync_client, keys.transactions, count=4)

    completed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "30d"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "removed 4 entries" in completed.stdout
    assert "consumer group 'g' held the trim back" in completed.stdout
    assert "and kept 6 entries older than the cutoff" in completed.stdout
    assert sync_client.xlen(keys.transactions) == 9


@one_server
def test_cli_trim_fully_read_not_held_back(cli_env, keys, sync_client):
    add_entries(sync_client, keys.transactions, old=10, recent=0)
    read_and_ack(sync_client, keys.transactions, count=10)

    text = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "1s", "--dry-run"], cli_env)
    as_json = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "1s", "--dry-run", "--json"], cli_env)

    assert text.returncode == 0, text.stderr[-2000:]
    assert "would remove 10 entries" in text.stdout
    assert "held the trim back" not in text.stdout
    assert as_json.returncode == 0, as_json.stderr[-2000:]
    report = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert report["held_back_by"] is None
    assert report["held_back_count"] == 0


@one_server
def test_cli_trim_one_entry_singular(cli_env, keys, sync_client):
    add_entries(sync_client, keys.transactions, old=2, recent=0)
    read_and_ack(sync_client, keys.transactions, count=1)

    completed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "1d", "--dry-run"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "would remove 1 entry older than" in completed.stdout
    assert "would keep 1 entry older than the cutoff" in completed.stdout


@one_server
def test_cli_trim_bad_age(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "a month"], cli_env)

    assert completed.returncode == 2
    assert "'a month'" in completed.stderr


async def test_consumer_trims_as_it_goes(redis_url, keys, sync_client):
    from consumer.pool import ConsumerPool
    from consumer.settings import ConsumerSettings
    from test_replay import add_transactions

    add_transactions(sync_client, keys, 6)  # at ids in November 2026, older than a day
    settings = ConsumerSettings(keys=keys, workers=1, block_ms=50, trim_older_than_seconds=86_400,
                                trim_interval_seconds=0.05)
    client = aioredis.Redis.from_url(redis_url)
    pool = ConsumerPool(client, settings)
    task = asyncio.create_task(pool.run())
    try:
        for _ in range(200):  # bounded: 200 polls of 0.05 s
            if sync_client.xlen(keys.transactions) == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        pool.stop()
        await asyncio.wait_for(task, timeout=15)
        await client.aclose()

    assert sync_client.xlen(keys.transactions) == 0
    assert sync_client.xlen(keys.results()) == 6


@one_server
def test_cli_consume_bad_trim_age(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--trim-older-than", "forever"], cli_env)

    assert completed.returncode == 2
    assert "'forever'" in completed.stderr


async def test_plan_min_id_pending_acked_meanwhile(redis_url, keys, sync_client, monkeypatch):
    import redis.asyncio as aioredis
    from datetime import timedelta

    from rewardpilot.retention import plan_min_id

    sync_client.xadd(keys.transactions, {"data": "x"}, id=old_id(0))  # older than the cutoff
    sync_client.xgroup_create(keys.transactions, "g", id="0")
    client = aioredis.Redis.from_url(redis_url)
    real_xinfo = client.xinfo_groups

    async def xinfo_with_stale_pending(stream):
        # XINFO GROUPS still reports one pending entry that XPENDING no longer has.
        groups = await real_xinfo(stream)
        for group in groups:
            group["pending"] = 1
        return groups

    monkeypatch.setattr(client, "xinfo_groups", xinfo_with_stale_pending)
    try:
        plan = await plan_min_id(client, keys.transactions, timedelta(seconds=1))
    finally:
        await client.aclose()

    # The group has read nothing (last-delivered-id 0-0), so trimming stops at 0-1.
    assert plan.held_back_by == "g"
    assert plan.min_id == "0-1"


@one_server
def test_cli_trim_partitions_replay_group_only(cli_env, keys, sync_client):
    """Each partition stream is judged by its own groups: one with only a replay group keeps everything."""
    from rewardpilot.partitions import agree_count, partition_stream

    agree_count(sync_client, keys, 2)
    streams = [partition_stream(keys, 2, partition) for partition in range(2)]
    for stream in streams:
        add_entries(sync_client, stream, recent=0)
        sync_client.xgroup_create(stream, "replay:preview", id=old_id(5))
    read_and_ack(sync_client, streams[0], count=4)  # the live group "g" exists on p0 only

    completed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "30d", "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    reports = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    assert [report["removed"] for report in reports] == [4, 0]
    assert [report["no_live_group"] for report in reports] == [False, True]
    assert [sync_client.xlen(stream) for stream in streams] == [6, 10]


def wait_for_length(client, stream: str, at_least: int, child: subprocess.Popen) -> None:
    for _ in range(3000):  # at most 60 s
        if client.exists(stream) and client.xlen(stream) >= at_least:
            return
        assert child.poll() is None, child.communicate()[1][-2000:]
        time.sleep(0.02)
    raise AssertionError(f"{stream} did not reach {at_least} entries within 60 s")


@one_server
def test_trim_after_stopped_replay_keeps_entries(cli_env, keys, sync_client, tmp_path):
    """Publish with no live group, stop a replay midway, trim: the live consumers still get every transaction."""
    source = ROOT / "examples" / "transactions.csv"
    published = invoke_cli(["--prefix", keys.prefix, "publish", str(source)], cli_env)
    assert published.returncode == 0, published.stderr[-2000:]
    rows = sync_client.xlen(keys.transactions)
    assert rows == 3000

    replay = subprocess.Popen(
        [sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "replay", "--start", "0",
         "--run", "preview", "--batch-size", "1"],
        env=cli_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_length(sync_client, keys.results("preview"), 200, replay)
        replay.send_signal(signal.SIGTERM)
        _, stderr = replay.communicate(timeout=60)
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.communicate(timeout=10)
    assert replay.returncode == 143, stderr[-2000:]
    # The stopped replay left its group, which has read part of the stream, and no live group exists.
    assert [group["name"] for group in sync_client.xinfo_groups(keys.transactions)] == ["replay:preview"]

    time.sleep(1.1)  # so that every entry is older than the cutoff of --older-than 1s
    trimmed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "1s", "--json"], cli_env)
    assert trimmed.returncode == 0, trimmed.stderr[-2000:]
    report = json.loads(trimmed.stdout.strip().splitlines()[-1])
    assert report["removed"] == 0
    assert report["no_live_group"] is True
    assert report["held_back_by"] is None
    assert report["held_back_count"] == rows
    assert sync_client.xlen(keys.transactions) == rows

    consumed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain"], cli_env)
    assert consumed.returncode == 0, consumed.stderr[-2000:]
    live_ids = {fields["transaction_id"] for _, fields in sync_client.xrange(keys.results())}
    assert len(live_ids) == rows
