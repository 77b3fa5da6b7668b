"""Producer limits and failure cases: the dedup window's maximum, marker-first publishing, lost replies,
one wait deadline over every partition, the backlog check interval and the types of the options."""

from __future__ import annotations

import asyncio
import threading
import types
from decimal import Decimal

import pytest
import redis

import producer.publisher
from producer import BacklogTimeout, InvalidOptionError, Producer
from producer.publisher import MAX_DEDUP_WINDOW_SECONDS
from rewardpilot import resp
from rewardpilot.models import Transaction
from rewardpilot.partitions import partition_of, partition_stream


def purchase(number: int, user: str = "u1") -> Transaction:
    return Transaction(transaction_id=f"ps-{number}", user_id=user, merchant="Shell", category="gas",
                       amount_usd=Decimal("5.00"), mcc="5541", timestamp="2026-06-01T10:00:00Z")


def markers(client, keys) -> list[str]:
    return list(client.scan_iter(match=keys.published_marker("*"), count=1000))


# The deduplication window's maximum

@pytest.mark.parametrize("value", [MAX_DEDUP_WINDOW_SECONDS + 1, 10**16, 2**63])
def test_dedup_window_above_maximum(sync_client, keys, value):
    with pytest.raises(InvalidOptionError) as raised:
        Producer(sync_client, keys, dedup_window_seconds=value)

    assert f"dedup_window_seconds={value}" in str(raised.value)
    assert "36500 days" in str(raised.value)


def test_dedup_window_maximum_publishes(sync_client, keys):
    publisher = Producer(sync_client, keys, dedup_window_seconds=MAX_DEDUP_WINDOW_SECONDS, max_backlog=None)

    assert publisher.publish(purchase(1)) is not None
    assert sync_client.ttl(keys.published_marker("ps-1")) > MAX_DEDUP_WINDOW_SECONDS - 60


def test_failed_xadd_leaves_earlier_items(sync_client, keys):
    """Items before a failing XADD keep their entry and marker, and the failing one gets neither."""
    publisher = Producer(sync_client, keys, max_backlog=None, partitions=2)
    users = {}
    number = 0
    while len(users) < 2:
        users.setdefault(partition_of(f"user-{number}", 2), f"user-{number}")
        number += 1
    sync_client.set(partition_stream(keys, 2, 1), "not a stream")

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        publisher.publish_chunk([purchase(1, users[0]), purchase(2, users[1])])

    assert sync_client.xlen(partition_stream(keys, 2, 0)) == 1
    assert sync_client.exists(keys.published_marker("ps-1"))
    assert not sync_client.exists(keys.published_marker("ps-2"))


# A reply lost after the script ran

@pytest.fixture
def first_reply_lost(monkeypatch):
    """Make the first publish-once call run on the server and then fail as a dropped connection would."""
    real_execute = resp.execute
    calls = []

    def execute(client, packed):
        reply = real_execute(client, packed)
        calls.append(packed)
        if len(calls) == 1:
            raise redis.ConnectionError("connection lost after the command ran")
        return reply

    monkeypatch.setattr(resp, "execute", execute)
    return calls


def test_lost_reply_returns_entry_id(sync_client, keys, first_reply_lost):
    publisher = Producer(sync_client, keys, max_backlog=None)

    entry_id = publisher.publish(purchase(1))

    assert len(first_reply_lost) == 2
    assert entry_id is not None
    assert sync_client.xrange(keys.transactions)[0][0] == entry_id
    assert sync_client.xlen(keys.transactions) == 1


def test_lost_reply_keeps_real_duplicate(sync_client, keys, first_reply_lost):
    publisher = Producer(sync_client, keys, max_backlog=None)
    first_reply_lost.append(b"")  # let the first publish through
    publisher.publish(purchase(1))
    first_reply_lost.clear()

    summary = publisher.publish_many([purchase(1), purchase(2)])

    assert summary.published == 1
    assert summary.duplicates == 1
    assert summary.duplicate_ids == ["ps-1"]
    assert sync_client.xlen(keys.transactions) == 2


def test_other_call_sees_duplicate(sync_client, keys):
    """Another publish call does not hold the token of the first, so it gets None."""
    publisher = Producer(sync_client, keys, max_backlog=None)

    assert publisher.publish(purchase(1)) is not None
    assert publisher.publish(purchase(1)) is None


def test_marker_without_token_is_duplicate(sync_client, keys):
    """A marker written by an older version contains only the entry id."""
    sync_client.set(keys.published_marker("ps-1"), "1-0", ex=60)

    assert Producer(sync_client, keys, max_backlog=None).publish(purchase(1)) is None
    assert sync_client.xlen(keys.transactions) == 0


# One wait deadline for every partition

class FakeClock:
    """A monotonic clock that moves only when the producer sleeps, and a consumer that reads on a schedule.

    ``drains`` maps a time to the stream whose entries the consumer group reads at that time.
    """

    def __init__(self, client, group: str, drains: dict[float, str]):
        self.now = 0.0
        self.client = client
        self.group = group
        self.drains = sorted(drains.items())

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        while self.drains and self.drains[0][0] <= self.now + 1e-9:
            _, stream = self.drains.pop(0)
            self.client.xreadgroup(self.group, "reader", {stream: ">"}, count=10_000)


def test_partition_waits_share_deadline(sync_client, keys, monkeypatch):
    """Partitions that drain one by one, each within max_wait_seconds, still time the call out at the deadline."""
    partitions = 4
    users = {}
    number = 0
    while len(users) < partitions:
        users.setdefault(partition_of(f"user-{number}", partitions), f"user-{number}")
        number += 1
    streams = [partition_stream(keys, partitions, partition) for partition in range(partitions)]
    for stream in streams:
        sync_client.xgroup_create(stream, keys.group(), id="0", mkstream=True)
    Producer(sync_client, keys, partitions=partitions, max_backlog=None).publish_many(
        purchase(100 * partition + index, users[partition]) for partition in range(partitions) for index in range(20)
    )
    clock = FakeClock(sync_client, keys.group(), {0.8 * (index + 1): stream for index, stream in enumerate(streams)})
    monkeypatch.setattr(producer.publisher, "time", types.SimpleNamespace(monotonic=clock.monotonic,
                                                                          sleep=clock.sleep))
    publisher = Producer(sync_client, keys, partitions=partitions, max_backlog=8, max_wait_seconds=1.0,
                         poll_seconds=0.1)

    with pytest.raises(BacklogTimeout, match=r"max_wait_seconds \(1.0 s\)"):
        publisher.publish(purchase(999, users[0]))

    assert clock.now == pytest.approx(1.0)
    assert not sync_client.exists(keys.published_marker("ps-999"))


def test_partition_waits_within_deadline(sync_client, keys, monkeypatch):
    partitions = 2
    streams = [partition_stream(keys, partitions, partition) for partition in range(partitions)]
    for stream in streams:
        sync_client.xgroup_create(stream, keys.group(), id="0", mkstream=True)
        for _ in range(10):
            sync_client.xadd(stream, {"data": "{}"})
    clock = FakeClock(sync_client, keys.group(), {0.3: streams[0], 0.6: streams[1]})
    monkeypatch.setattr(producer.publisher, "time", types.SimpleNamespace(monotonic=clock.monotonic,
                                                                          sleep=clock.sleep))
    publisher = Producer(sync_client, keys, partitions=partitions, max_backlog=8, max_wait_seconds=1.0,
                         poll_seconds=0.1)

    assert publisher.publish(purchase(1)) is not None
    assert publisher.waits == 1
    assert clock.now == pytest.approx(0.6)


# How often the backlog is checked

def test_small_backlog_checked_every_limit(sync_client, keys):
    sync_client.xgroup_create(keys.transactions, keys.group(), id="$", mkstream=True)
    publisher = Producer(sync_client, keys, max_backlog=10, max_wait_seconds=0)

    published = 0
    with pytest.raises(BacklogTimeout):
        for number in range(1000):
            publisher.publish(purchase(number))
            published += 1

    assert published == 20
    assert sync_client.xlen(keys.transactions) == 20


@pytest.mark.parametrize(("chunk_size", "max_backlog", "interval"), [
    (1000, 10, 10), (1000, None, 1000), (1000, 100_000, 1000), (50, 10, 10), (1000, 0, 1), (1, 0, 1),
])
def test_backlog_check_interval(sync_client, keys, chunk_size, max_backlog, interval):
    publisher = Producer(sync_client, keys, chunk_size=chunk_size, max_backlog=max_backlog)

    assert publisher.backlog_check_interval == interval


# Option types

@pytest.mark.parametrize("value", [True, 5, "stop", asyncio.Event()])
def test_stop_not_event_rejected(sync_client, keys, value):
    with pytest.raises(InvalidOptionError) as raised:
        Producer(sync_client, keys, stop=value)

    assert f"stop={value!r}" in str(raised.value)
    assert "threading.Event" in str(raised.value)


@pytest.mark.parametrize("value", [5, "print", True])
def test_on_wait_not_callable_rejected(sync_client, keys, value):
    with pytest.raises(InvalidOptionError) as raised:
        Producer(sync_client, keys, on_wait=value)

    assert f"on_wait={value!r}" in str(raised.value)
    assert "function" in str(raised.value)


@pytest.mark.parametrize("value", [5, b"group", ""])
def test_group_not_text_rejected(sync_client, keys, value):
    with pytest.raises(InvalidOptionError, match="group="):
        Producer(sync_client, keys, group=value)


def test_valid_stop_and_on_wait_accepted(sync_client, keys):
    stop = threading.Event()
    messages = []

    publisher = Producer(sync_client, keys, stop=stop, on_wait=messages.append, group="readers")

    assert publisher.stop is stop
    assert publisher.group == "readers"
    assert publisher.publish(purchase(1)) is not None


@pytest.mark.parametrize("linger", ["1", -1, float("nan"), True])
def test_publish_file_rejects_bad_linger(sync_client, keys, tmp_path, linger):
    from producer import publish_file

    source = tmp_path / "t.csv"
    source.write_text("transaction_id,user_id,merchant,amount_usd\nl1,u1,Shell,10.00\n")

    with pytest.raises(InvalidOptionError) as raised:
        publish_file(sync_client, keys, source, rejects_path=tmp_path / "r.jsonl", progress=False,
                     linger_seconds=linger)
    assert "linger_seconds=" in str(raised.value)
