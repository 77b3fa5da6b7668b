"""Dead letters, redrive, trim, status and replay on partitioned streams.

Every test runs against a real server (the ``redis_url`` fixtures). Where a
test needs to know which partition stream a user's transactions went to, it
finds them in the streams instead of computing ``partition_of`` again.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from rich.console import Console

from conftest import invoke_cli, one_server, run_cli
from consumer import dlq
from consumer.pool import ConsumerPool
from consumer.recommenders import InProcessRecommender, ItemError
from consumer.settings import ConsumerSettings
from consumer.transports.partitioned import PartitionedStreamTransport
from producer.publisher import Producer
from rewardpilot.cli.status_cmd import _render
from rewardpilot.codec import encode_transaction
from rewardpilot.connection import connect_async
from rewardpilot.models import DeadLetter
from rewardpilot.partitions import agree_count, count_key, partition_stream
from rewardpilot.results import read_results
from test_partitions import make_transactions, published_by_user, read_and_die, results_by_user, write_csv

RUN_LIMIT_SECONDS = 60  # bounds every pool run, so a hung pool fails the test instead of the suite
# 2020-09-13T12:26:40Z: entries at ids from here are older than any age the tests trim by.
OLD_MS = 1_600_000_000_000


class RejectingRecommender:
    """The in-process engine, except that it rejects the named transactions as permanent failures."""

    name = "in-process"

    def __init__(self, rejected: set[str]):
        self.engine = InProcessRecommender()
        self.rejected = rejected

    async def recommend(self, items):
        outcomes = await self.engine.recommend(items)
        return [
            ItemError("Rejected", f"test rejects {item.transaction.transaction_id}", http_status=422)
            if item.transaction.transaction_id in self.rejected else outcome
            for item, outcome in zip(items, outcomes)
        ]

    async def aclose(self) -> None:
        await self.engine.aclose()


def settings_for(keys, partitions: int, **overrides) -> ConsumerSettings:
    values = dict(keys=keys, consumer="c1", workers=2, batch_size=5, block_ms=100, drain=True,
                  partitions=partitions, lease_ms=600, visibility_timeout_ms=300, claim_interval_seconds=0.1,
                  shutdown_grace_seconds=2)
    values.update(overrides)
    return ConsumerSettings(**values)


def drain(url, settings: ConsumerSettings, recommender=None):
    """Run one partitioned pool until drained."""
    async def main():
        client = connect_async(url, block_ms=settings.block_ms)
        try:
            pool = ConsumerPool(client, settings, recommender or InProcessRecommender(),
                                transport=PartitionedStreamTransport(client, settings, settings.consumer))
            return await asyncio.wait_for(pool.run(), RUN_LIMIT_SECONDS)
        finally:
            await client.aclose()

    return asyncio.run(main())


def stream_holding(client, keys, partitions: int, transaction_id: str) -> str:
    """Return the partition stream whose entries contain ``transaction_id``."""
    found = [
        partition_stream(keys, partitions, partition) for partition in range(partitions)
        for _entry_id, fields in client.xrange(partition_stream(keys, partitions, partition))
        if json.loads(fields["data"])["transaction_id"] == transaction_id
    ]
    assert len(found) == 1, found
    return found[0]


def letters(client, keys) -> list[tuple[str, DeadLetter]]:
    return list(dlq.list_dead_letters(client, keys))


# Dead letters name their partition stream


def test_rejected_letter_names_partition(redis_url, sync_client, keys):
    transactions = make_transactions(9, ["alice", "bob", "carol"])
    Producer(sync_client, keys, max_backlog=None, partitions=3).publish_many(transactions)

    drain(redis_url, settings_for(keys, 3), RejectingRecommender({"t-00004"}))

    [(_letter_id, letter)] = letters(sync_client, keys)
    assert letter.transaction_id == "t-00004"
    assert letter.reason == "rejected by recommender"
    assert letter.stream == stream_holding(sync_client, keys, 3, "t-00004")
    assert sync_client.xlen(keys.results()) == 8


def test_invalid_entry_letter_names_partition(redis_url, sync_client, keys):
    agree_count(sync_client, keys, 3)
    stream = partition_stream(keys, 3, 1)
    sync_client.xadd(stream, {"data": "not json"})

    drain(redis_url, settings_for(keys, 3))

    [(_letter_id, letter)] = letters(sync_client, keys)
    assert letter.reason == "invalid entry"
    assert letter.stream == stream
    assert letter.payload == {"data": "not json"}


def test_lost_entry_letter_names_partition(redis_url, sync_client, keys):
    Producer(sync_client, keys, max_backlog=None, partitions=2).publish_many(make_transactions(10, ["alice"]))
    settings = settings_for(keys, 2, lease_ms=500)
    stream = stream_holding(sync_client, keys, 2, "t-00000")

    abandoned = asyncio.run(read_and_die(redis_url, settings))
    sync_client.xdel(stream, *abandoned)
    drain(redis_url, settings_for(keys, 2, consumer="survivor", lease_ms=500))

    found = letters(sync_client, keys)
    assert sorted(letter.entry_id for _, letter in found) == sorted(abandoned)
    assert {letter.reason for _, letter in found} == {"deleted while pending"}
    assert {letter.stream for _, letter in found} == {stream}
    assert sync_client.xlen(keys.results()) == 5


def test_poison_letter_names_partition(redis_url, sync_client, keys):
    Producer(sync_client, keys, max_backlog=None, partitions=2).publish_many(make_transactions(10, ["alice"]))
    settings = settings_for(keys, 2, lease_ms=500, max_deliveries=1)
    stream = stream_holding(sync_client, keys, 2, "t-00000")

    asyncio.run(read_and_die(redis_url, settings))
    drain(redis_url, settings_for(keys, 2, consumer="survivor", lease_ms=500, max_deliveries=1))

    found = letters(sync_client, keys)
    assert [letter.transaction_id for _, letter in found] == [f"t-{i:05d}" for i in range(5)]
    assert {letter.reason for _, letter in found} == {"poison message"}
    assert {letter.stream for _, letter in found} == {stream}


# Redrive


def test_redrive_reaches_user_partition(redis_url, sync_client, keys, cli_env):
    transactions = make_transactions(9, ["alice", "bob", "carol"])
    Producer(sync_client, keys, max_backlog=None, partitions=3).publish_many(transactions)
    drain(redis_url, settings_for(keys, 3), RejectingRecommender({"t-00004"}))
    home = stream_holding(sync_client, keys, 3, "t-00004")
    length_before = sync_client.xlen(home)

    redriven = invoke_cli(["--prefix", keys.prefix, "dlq", "redrive", "--all"], cli_env)

    assert redriven.returncode == 0, redriven.stderr[-2000:]
    assert "redrove 1 dead letter onto the 3 partition streams" in redriven.stdout + redriven.stderr
    assert sync_client.xlen(keys.dead_letters) == 0
    assert sync_client.exists(keys.transactions) == 0
    assert sync_client.xlen(home) == length_before + 1
    _entry_id, fields = sync_client.xrevrange(home, count=1)[0]
    assert json.loads(fields["data"])["transaction_id"] == "t-00004"

    drain(redis_url, settings_for(keys, 3))

    ids = [result.transaction_id for result in read_results(sync_client, keys.results())]
    assert ids.count("t-00004") == 1
    assert sorted(ids) == [f"t-{i:05d}" for i in range(9)]
    assert sync_client.xlen(keys.dead_letters) == 0


def test_redrive_without_user_goes_home(redis_url, sync_client, keys):
    agree_count(sync_client, keys, 3)
    stream = partition_stream(keys, 3, 2)
    sync_client.xadd(stream, {"data": "not json"})
    drain(redis_url, settings_for(keys, 3))
    [(letter_id, _letter)] = letters(sync_client, keys)

    [new_id] = dlq.redrive(sync_client, keys, [letter_id])

    assert sync_client.xrange(stream, min=new_id, max=new_id)[0][1] == {"data": "not json"}
    assert sync_client.xlen(keys.dead_letters) == 0


def add_unroutable_letter(client, keys) -> str:
    """Add a letter without a user_id that names the single stream, as letters did before partitioning."""
    letter = DeadLetter(
        entry_id="1700000000000-0", stream=keys.transactions, payload={"data": '{"amount_usd": "5.00"}'},
        reason="invalid entry", error_type="ValidationError", error="user_id: field required",
        consumer="old", first_failure_at="2026-11-01T00:00:00Z", last_failure_at="2026-11-01T00:00:00Z",
    )
    return client.xadd(keys.dead_letters, {"data": letter.model_dump_json()})


@one_server
def test_redrive_unroutable_named_rejected(sync_client, keys, cli_env):
    agree_count(sync_client, keys, 3)
    letter_id = add_unroutable_letter(sync_client, keys)

    with pytest.raises(dlq.RedriveError) as caught:
        dlq.redrive(sync_client, keys, [letter_id])
    assert letter_id in str(caught.value)
    assert "no user_id" in str(caught.value)
    assert "purge" in str(caught.value)

    completed = invoke_cli(["--prefix", keys.prefix, "dlq", "redrive", letter_id], cli_env)
    assert completed.returncode == 1
    assert letter_id in completed.stdout + completed.stderr
    assert sync_client.xlen(keys.dead_letters) == 1


def test_redrive_all_keeps_unroutable(sync_client, keys, cli_env):
    Producer(sync_client, keys, max_backlog=None, partitions=3).publish_many(make_transactions(1, ["alice"]))
    home = stream_holding(sync_client, keys, 3, "t-00000")
    sync_client.delete(home)
    routable = DeadLetter(
        entry_id="1700000000000-1", stream=keys.transactions,
        payload={"data": make_transactions(1, ["alice"])[0].model_dump_json()}, transaction_id="t-00000",
        reason="rejected by recommender", error_type="Rejected", error="422 from the orchestrator",
        consumer="old", first_failure_at="2026-11-01T00:00:00Z", last_failure_at="2026-11-01T00:00:00Z",
    )
    sync_client.xadd(keys.dead_letters, {"data": routable.model_dump_json()})
    kept = add_unroutable_letter(sync_client, keys)

    completed = invoke_cli(["--prefix", keys.prefix, "dlq", "redrive", "--all"], cli_env)

    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "redrove 1 dead letter onto" in output
    assert "1 dead letter remains" in output
    assert [letter_id for letter_id, _ in letters(sync_client, keys)] == [kept]
    assert sync_client.xlen(home) == 1
    assert sync_client.exists(keys.transactions) == 0


def test_redrive_single_stream_unchanged(sync_client, keys):
    letter_id = add_unroutable_letter(sync_client, keys)

    [new_id] = dlq.redrive(sync_client, keys, [letter_id])

    assert sync_client.xrange(keys.transactions)[0][0] == new_id
    assert sync_client.get(count_key(keys)) is None  # redrive reads the count, never stores one


# Trim


def add_old(client, stream: str, count: int, first: int = 0) -> None:
    for index in range(first, first + count):
        client.xadd(stream, {"data": f"old-{index}"}, id=f"{OLD_MS + index * 1000}-0")


def test_cli_trim_every_partition(sync_client, keys, cli_env):
    agree_count(sync_client, keys, 3)
    streams = [partition_stream(keys, 3, partition) for partition in range(3)]
    for stream in streams:
        add_old(sync_client, stream, 10)
    # p0: the group read and acknowledged 4 of 10. p1: the group read nothing. p2: no group.
    sync_client.xgroup_create(streams[0], "g", id="0")
    read = sync_client.xreadgroup("g", "c1", {streams[0]: ">"}, count=4)[0][1]
    sync_client.xack(streams[0], "g", *[entry_id for entry_id, _ in read])
    sync_client.xgroup_create(streams[1], "g", id="0")

    completed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "30d", "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    reports = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    assert [report["stream"] for report in reports] == streams
    assert [report["removed"] for report in reports] == [4, 0, 0]
    assert [report["held_back_by"] for report in reports] == ["g", "g", None]
    assert [report["no_consumer_group"] for report in reports] == [False, False, True]
    assert reports[0]["min_id"] == f"{OLD_MS + 3000}-1"
    assert [sync_client.xlen(stream) for stream in streams] == [6, 10, 10]


@one_server
def test_cli_trim_partitions_dry_run(sync_client, keys, cli_env):
    agree_count(sync_client, keys, 2)
    streams = [partition_stream(keys, 2, partition) for partition in range(2)]
    add_old(sync_client, streams[0], 3)
    add_old(sync_client, streams[1], 5)
    for stream in streams:
        sync_client.xgroup_create(stream, "g", id="$")  # a group that has read every entry

    completed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "1d", "--dry-run"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"{streams[0]}: would remove 3 entries" in completed.stdout
    assert f"{streams[1]}: would remove 5 entries" in completed.stdout
    assert [sync_client.xlen(stream) for stream in streams] == [3, 5]


async def test_pool_trims_every_partition(redis_url, sync_client, keys):
    agree_count(sync_client, keys, 3)
    transactions = make_transactions(12, ["alice", "bob", "carol", "dave"])
    # Route by the producer, then move each entry to an old id on the same stream.
    Producer(sync_client, keys, max_backlog=None, partitions=3).publish_many(transactions)
    homes = {t.transaction_id: stream_holding(sync_client, keys, 3, t.transaction_id) for t in transactions}
    for stream in set(homes.values()):
        sync_client.delete(stream)
    for index, transaction in enumerate(transactions):
        sync_client.xadd(homes[transaction.transaction_id], encode_transaction(transaction),
                         id=f"{OLD_MS + index * 1000}-0")
    streams = [partition_stream(keys, 3, partition) for partition in range(3)]

    settings = settings_for(keys, 3, drain=False, trim_older_than_seconds=86_400, trim_interval_seconds=0.05)
    client = connect_async(redis_url, block_ms=settings.block_ms)
    pool = ConsumerPool(client, settings, InProcessRecommender(),
                        transport=PartitionedStreamTransport(client, settings, settings.consumer))
    task = asyncio.create_task(pool.run())
    try:
        for _ in range(200):  # bounded: 200 polls of 0.05 s
            if sum(sync_client.xlen(stream) for stream in streams) == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        pool.stop()
        await asyncio.wait_for(task, timeout=15)
        await client.aclose()

    assert [sync_client.xlen(stream) for stream in streams] == [0, 0, 0]
    assert sync_client.xlen(keys.results()) == 12


# Status


def render_text(snapshot: dict) -> str:
    console = Console(record=True, width=220)
    console.print(_render(snapshot))
    return console.export_text()


def partition_snapshot() -> dict:
    group = {"name": "rp-consumers", "lag": 3, "pending": 2, "oldest_pending_age_ms": 2500,
             "last_delivered_id": "5-0", "consumers": [{"name": "c1", "pending": 2, "idle_ms": 10}],
             "lease_holder": "c1"}
    free = {"name": "rp-consumers", "lag": 0, "pending": 0, "oldest_pending_age_ms": None,
            "last_delivered_id": "9-0", "consumers": [], "lease_holder": None}
    return {
        "transactions": {"stream": "rp:transactions", "length": 0, "groups": []},
        "partitions": [
            {"partition": 0, "stream": "rp:transactions:p0", "length": 7, "groups": [group]},
            {"partition": 1, "stream": "rp:transactions:p1", "length": 4, "groups": [free]},
            {"partition": 2, "stream": "rp:transactions:p2", "length": 0, "groups": []},
        ],
        "results": {"live": 9}, "dead_letters": 1, "rate_limit": None,
    }


def row_of(text: str, first_cell: str) -> list[str]:
    """Return the cells of the table row whose first cell is ``first_cell``."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│┃").split("│")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row starting with {first_cell!r} in:\n{text}")


def test_render_partition_rows():
    text = render_text(partition_snapshot())

    assert "rp:transactions:p0 to p2: 11 entries in 3 partitions" in text
    assert row_of(text, "0") == ["0", "7", "rp-consumers", "3", "2", "2.5", "c1", "c1: 2"]
    assert row_of(text, "1") == ["1", "4", "rp-consumers", "0", "0", "-", "free", "-"]
    assert row_of(text, "2") == ["2", "0", "-", "-", "-", "-", "-", "-"]
    assert "dead letters: 1" in text


def test_render_single_stream_without_partitions():
    snapshot = partition_snapshot()
    snapshot["partitions"] = []

    text = render_text(snapshot)

    assert "rp:transactions: 0 entries" in text
    assert "lease holder" not in text


@one_server
def test_cli_status_shows_lease_holder(redis_url, sync_client, keys, cli_env):
    Producer(sync_client, keys, max_backlog=None, partitions=2).publish_many(
        make_transactions(6, ["alice", "bob", "carol"]))
    settings = settings_for(keys, 2, consumer="holder", lease_ms=30_000)

    async def scenario():
        client = connect_async(redis_url)
        transport = PartitionedStreamTransport(client, settings, "holder")
        await transport.open()
        try:
            return run_cli(["--prefix", keys.prefix, "status"], cli_env)
        finally:
            await transport.close()
            await client.aclose()

    completed = asyncio.run(scenario())

    assert completed.returncode == 0, completed.stderr[-2000:]
    lengths = [sync_client.xlen(partition_stream(keys, 2, partition)) for partition in range(2)]
    for partition in range(2):
        cells = row_of(completed.stdout, str(partition))
        assert cells[1] == str(lengths[partition])
        assert cells[2] == "rp-consumers"
        assert cells[3] == str(lengths[partition])  # nothing read yet: every entry is lag
        assert cells[6] == "holder"
    assert "6 entries in 2 partitions" in completed.stdout


@one_server
def test_cli_status_watch_partitions(sync_client, keys, cli_env):
    agree_count(sync_client, keys, 2)

    completed = invoke_cli(["--prefix", keys.prefix, "status", "--watch", "--interval", "0.1", "--count", "1"],
                           cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "0 entries in 2 partitions" in completed.stdout
    assert "lease holder" in completed.stdout


# Replay through the CLI


def test_cli_replay_partitions_leaves_live(sync_client, keys, cli_env, tmp_path):
    first = make_transactions(24, ["alice", "bob", "carol", "dave"])
    later = make_transactions(6, ["alice", "erin"], prefix="late")
    write_csv(tmp_path / "first.csv", first)
    write_csv(tmp_path / "later.csv", later)
    prefix = ["--prefix", keys.prefix]

    published = invoke_cli([*prefix, "publish", str(tmp_path / "first.csv"), "--partitions", "3"], cli_env)
    assert published.returncode == 0, published.stderr[-2000:]
    consumed = invoke_cli([*prefix, "consume", "--drain", "--block-ms", "100", "--lease", "1"], cli_env)
    assert consumed.returncode == 0, consumed.stderr[-2000:]
    published = invoke_cli([*prefix, "publish", str(tmp_path / "later.csv")], cli_env)
    assert published.returncode == 0, published.stderr[-2000:]

    streams = [partition_stream(keys, 3, partition) for partition in range(3)]

    def live_groups():
        return [next(g for g in sync_client.xinfo_groups(s) if g["name"] == keys.group()) for s in streams]

    before = live_groups()

    replayed = invoke_cli([*prefix, "replay", "--start", "0", "--run", "again", "--compare", "--json"], cli_env)

    assert replayed.returncode == 0, replayed.stderr[-2000:]
    summary = json.loads(replayed.stdout.strip().splitlines()[-1])
    assert summary["results"] == 30
    assert summary["comparison"]["compared"] == 24
    assert summary["comparison"]["differing"] == 0
    assert sorted(summary["comparison"]["missing_live"]) == [f"late-{i:05d}" for i in range(6)]
    assert results_by_user(sync_client, keys.results("again")) == published_by_user(first + later)

    after = live_groups()
    assert [g["last-delivered-id"] for g in after] == [g["last-delivered-id"] for g in before]
    assert sum(g["lag"] for g in after) == 6
    assert sum(g["pending"] for g in after) == 0
    assert sync_client.xlen(keys.results()) == 24
    for stream in streams:
        assert "replay:again" not in [g["name"] for g in sync_client.xinfo_groups(stream)]
