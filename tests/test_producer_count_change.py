"""A long-running Producer whose stored partition count changes, and the stranded streams that status reports.

The documented count change is: stop publishing, drain, delete
``{prefix}partitions`` and start the consumers with the new count. A producer
that stays up through it must never route a chunk by the old count.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis

from conftest import invoke_cli

import producer
import rewardpilot.partitions
from producer import PartitionCountError, Producer, ProducerError
from rewardpilot.models import Transaction
from rewardpilot.partitions import count_key, partition_of, partition_stream
from rewardpilot.status import collect_status, stranded_warning

USERS = [f"user-{number}" for number in range(16)]


def purchase(number: int) -> Transaction:
    return Transaction(transaction_id=f"cc-{number}", user_id=USERS[number % len(USERS)], merchant="Shell",
                       category="gas", amount_usd=Decimal("5.00"), mcc="5541", timestamp="2026-06-01T10:00:00Z")


def stream_lengths(client, keys, partitions: int) -> dict[int, int]:
    return {partition: client.xlen(partition_stream(keys, partitions, partition)) for partition in range(partitions)}


def expected_lengths(numbers, partitions: int) -> dict[int, int]:
    lengths = dict.fromkeys(range(partitions), 0)
    for number in numbers:
        lengths[partition_of(USERS[number % len(USERS)], partitions)] += 1
    return lengths


# The producer follows or rejects a changed count

@pytest.mark.parametrize("window", [86_400, 0])
def test_producer_follows_new_count(sync_client, keys, window):
    sync_client.set(count_key(keys), 4)
    publisher = Producer(sync_client, keys, max_backlog=None, dedup_window_seconds=window)
    publisher.publish_many(purchase(number) for number in range(40))
    before = stream_lengths(sync_client, keys, 4)

    sync_client.delete(count_key(keys))
    sync_client.set(count_key(keys), 2)  # the consumers restarted with --partitions 2
    summary = publisher.publish_many(purchase(number) for number in range(40, 100))

    assert summary.published == 60
    assert publisher.partitions == 2
    after = stream_lengths(sync_client, keys, 4)
    assert after[2] == before[2]
    assert after[3] == before[3]
    new = expected_lengths(range(40, 100), 2)
    assert after[0] == before[0] + new[0]
    assert after[1] == before[1] + new[1]


def test_single_stream_producer_follows_count(sync_client, keys):
    publisher = Producer(sync_client, keys, max_backlog=None)
    publisher.publish(purchase(0))
    assert sync_client.get(count_key(keys)) == "1"

    sync_client.set(count_key(keys), 4)
    publisher.publish_many(purchase(number) for number in range(1, 21))

    assert sync_client.xlen(keys.transactions) == 1
    assert sum(stream_lengths(sync_client, keys, 4).values()) == 20


@pytest.mark.parametrize("window", [86_400, 0])
def test_fixed_count_producer_rejects_change(sync_client, keys, window):
    publisher = Producer(sync_client, keys, partitions=4, max_backlog=None, dedup_window_seconds=window)
    publisher.publish(purchase(0))
    sync_client.set(count_key(keys), 2)

    with pytest.raises(PartitionCountError) as raised:
        publisher.publish(purchase(1))

    message = str(raised.value)
    assert "changed from 4 to 2" in message
    assert "partitions=2" in message
    assert "partitions=None" in message
    assert sum(stream_lengths(sync_client, keys, 4).values()) == 1
    assert not sync_client.exists(keys.published_marker("cc-1"))


@pytest.mark.parametrize("requested", [None, 4])
@pytest.mark.parametrize("window", [86_400, 0])
def test_deleted_count_stops_publishing(sync_client, keys, requested, window):
    sync_client.set(count_key(keys), 4)
    publisher = Producer(sync_client, keys, partitions=requested, max_backlog=None, dedup_window_seconds=window)
    publisher.publish(purchase(0))
    sync_client.delete(count_key(keys))

    with pytest.raises(PartitionCountError) as raised:
        publisher.publish(purchase(1))

    assert "deleted or expired" in str(raised.value)
    assert "consume --partitions N" in str(raised.value)
    assert not sync_client.exists(count_key(keys))  # the producer does not store a count of its own
    assert sum(stream_lengths(sync_client, keys, 4).values()) == 1
    assert not sync_client.exists(keys.transactions)


def test_publishing_resumes_once_count_stored(sync_client, keys):
    sync_client.set(count_key(keys), 4)
    publisher = Producer(sync_client, keys, max_backlog=None)
    publisher.publish(purchase(0))
    sync_client.delete(count_key(keys))
    with pytest.raises(PartitionCountError):
        publisher.publish(purchase(1))

    sync_client.set(count_key(keys), 2)

    assert publisher.publish(purchase(1)) is not None
    assert sync_client.xlen(partition_stream(keys, 2, partition_of(USERS[1], 2))) >= 1


def test_invalid_stored_count_named(sync_client, keys):
    publisher = Producer(sync_client, keys, max_backlog=None)
    publisher.publish(purchase(0))
    sync_client.set(count_key(keys), "four")

    with pytest.raises(PartitionCountError, match="contains 'four'"):
        publisher.publish(purchase(1))


def test_change_detected_on_bytes_client(redis_url, keys):
    client = redis.Redis.from_url(redis_url)  # replies as bytes
    try:
        client.set(count_key(keys), 4)
        publisher = Producer(client, keys, max_backlog=None)
        publisher.publish(purchase(0))
        client.set(count_key(keys), 2)

        assert publisher.publish(purchase(1)) is not None
        assert publisher.partitions == 2
    finally:
        client.close()


def test_change_mid_call_carries_summary(sync_client, keys):
    sync_client.set(count_key(keys), 4)
    publisher = Producer(sync_client, keys, partitions=4, chunk_size=5, max_backlog=None)

    def purchases():
        for number in range(20):
            if number == 5:
                sync_client.set(count_key(keys), 8)  # read while the second chunk is collected
            yield purchase(number)

    with pytest.raises(PartitionCountError) as raised:
        publisher.publish_many(purchases())

    assert raised.value.summary is not None
    assert raised.value.summary.published == 5
    assert sum(stream_lengths(sync_client, keys, 4).values()) == 5


# The producer's partition errors

def test_partition_error_is_producer_error():
    assert issubclass(PartitionCountError, ProducerError)
    assert issubclass(PartitionCountError, rewardpilot.partitions.PartitionCountError)
    assert issubclass(PartitionCountError, ValueError)
    assert producer.PartitionCountError is PartitionCountError


@pytest.mark.parametrize("value", [0, 1025, 2.0, "4", True])
def test_invalid_count_caught_as_producer_error(sync_client, keys, value):
    with pytest.raises(ProducerError) as raised:
        Producer(sync_client, keys, partitions=value)

    assert isinstance(raised.value, PartitionCountError)
    assert f"partitions={value!r}" in str(raised.value)
    assert "1 to 1024" in str(raised.value)


def test_mismatch_at_start_has_summary(sync_client, keys):
    sync_client.set(count_key(keys), 4)

    with pytest.raises(rewardpilot.partitions.PartitionCountError) as raised:
        Producer(sync_client, keys, partitions=2).publish_many([purchase(1)])

    assert isinstance(raised.value, ProducerError)
    assert raised.value.summary.processed == 0
    assert raised.value.summary.unconfirmed == 0


# status finds streams outside the stored count

def test_status_lists_stranded_partitions(sync_client, keys):
    sync_client.set(count_key(keys), 2)
    for partition in (2, 3):
        sync_client.xadd(f"{keys.transactions}:p{partition}", {"data": "{}"})

    snapshot = collect_status(sync_client, keys)

    assert [stream["stream"] for stream in snapshot["stranded"]] == [
        f"{keys.transactions}:p2", f"{keys.transactions}:p3",
    ]
    warning = snapshot["stranded_warning"]
    assert f"outside the 2 partition(s) stored in {count_key(keys)}" in warning
    assert f"--prefix {keys.prefix} consume --partitions 4 --drain" in warning
    assert "start the consumers with --partitions 2" in warning
    assert len(snapshot["partitions"]) == 2


def test_status_skips_settled_old_partition(sync_client, keys):
    sync_client.set(count_key(keys), 2)
    old = f"{keys.transactions}:p3"
    sync_client.xadd(old, {"data": "{}"})
    sync_client.xgroup_create(old, keys.group(), id="0")
    for stream, entries in sync_client.xreadgroup(keys.group(), "c1", {old: ">"}):
        sync_client.xack(stream, keys.group(), *[entry_id for entry_id, _ in entries])

    snapshot = collect_status(sync_client, keys)

    assert snapshot["stranded"] == []
    assert snapshot["stranded_warning"] is None


def test_status_pending_old_partition_stranded(sync_client, keys):
    sync_client.set(count_key(keys), 2)
    old = f"{keys.transactions}:p2"
    sync_client.xadd(old, {"data": "{}"})
    sync_client.xgroup_create(old, keys.group(), id="0")
    sync_client.xreadgroup(keys.group(), "c1", {old: ">"})  # read, never acknowledged

    snapshot = collect_status(sync_client, keys)

    assert [stream["stream"] for stream in snapshot["stranded"]] == [old]
    assert "--partitions 3 --drain" in snapshot["stranded_warning"]


def test_status_single_stream_finds_partitions(sync_client, keys):
    sync_client.xadd(keys.transactions, {"data": "{}"})
    sync_client.xadd(f"{keys.transactions}:p0", {"data": "{}"})

    snapshot = collect_status(sync_client, keys)

    assert [stream["stream"] for stream in snapshot["stranded"]] == [f"{keys.transactions}:p0"]
    assert "outside the 1 partition(s)" in snapshot["stranded_warning"]


def test_status_partitioned_finds_single_stream(sync_client, keys):
    sync_client.set(count_key(keys), 4)
    sync_client.xadd(keys.transactions, {"data": "{}"})

    snapshot = collect_status(sync_client, keys)

    assert [stream["stream"] for stream in snapshot["stranded"]] == [keys.transactions]
    assert "consume --partitions 1 --drain" in snapshot["stranded_warning"]


def test_status_clean_prefix_no_warning(sync_client, keys):
    Producer(sync_client, keys, partitions=4, max_backlog=None).publish_many(purchase(number) for number in range(8))

    snapshot = collect_status(sync_client, keys)

    assert snapshot["stranded"] == []
    assert snapshot["stranded_warning"] is None


def test_stranded_warning_names_job(keys):
    from rewardpilot.streams import StreamKeys

    job = StreamKeys(prefix=keys.prefix, job="nightly")
    stranded = [{"stream": f"{job.transactions}:p5", "length": 3, "groups": []}]

    warning = stranded_warning(job, 2, stranded)

    assert "consume --job nightly --partitions 6 --drain" in warning
    assert "3 entries" in warning


def test_cli_status_prints_stranded_warning(sync_client, keys, cli_env):
    sync_client.set(count_key(keys), 2)
    sync_client.xadd(f"{keys.transactions}:p3", {"data": "{}"})

    completed = invoke_cli(["--prefix", keys.prefix, "status"], {**cli_env, "COLUMNS": "200"})

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "warning:" in completed.stderr
    assert f"outside the 2 partition(s) stored in {count_key(keys)}" in " ".join(completed.stderr.split())
