"""InMemoryQueueStandIn keeps modal.Queue's documented limits: full partitions, item size, TTL."""

from __future__ import annotations

import asyncio
import queue as stdlib_queue
import threading
import time

import pytest
from modal.exception import RequestSizeError

from modal_standin import MAX_ITEM_BYTES, MAX_PARTITION_ITEMS, InMemoryQueueStandIn


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fill(queue: InMemoryQueueStandIn, partition: str) -> None:
    queue.put_many(list(range(MAX_PARTITION_ITEMS)), partition=partition)


def test_full_partition_nonblocking_put_raises():
    queue = InMemoryQueueStandIn()
    fill(queue, "p0")

    with pytest.raises(stdlib_queue.Full):
        queue.put("x", block=False, partition="p0")
    assert queue.len(partition="p0") == MAX_PARTITION_ITEMS
    queue.put("y", block=False, partition="p1")  # other partitions keep their own room
    assert queue.len(partition="p1") == 1


def test_full_partition_blocking_put_times_out():
    queue = InMemoryQueueStandIn()
    fill(queue, "p0")

    started = time.monotonic()
    with pytest.raises(stdlib_queue.Full):
        queue.put_many(["x"], timeout=0.2, partition="p0")
    assert time.monotonic() - started >= 0.2


def test_blocking_put_waits_for_room():
    queue = InMemoryQueueStandIn()
    fill(queue, "p0")
    taker = threading.Timer(0.1, lambda: queue.get_many(2, block=False, partition="p0"))
    taker.start()

    queue.put_many(["x", "y"], timeout=5, partition="p0")
    taker.join()

    assert queue.len(partition="p0") == MAX_PARTITION_ITEMS


def test_blocking_put_aio_times_out():
    queue = InMemoryQueueStandIn()
    fill(queue, "p0")
    with pytest.raises(stdlib_queue.Full):
        asyncio.run(queue.put_many.aio(["x"], timeout=0.1, partition="p0"))


def test_item_over_one_mib_rejected():
    queue = InMemoryQueueStandIn()
    with pytest.raises(RequestSizeError, match="item 1 is"):
        queue.put_many(["small", "x" * MAX_ITEM_BYTES], partition="p0")
    assert queue.len(partition="p0") == 0  # nothing of the rejected request was put


def test_partition_cleared_after_ttl():
    clock = FakeClock()
    queue = InMemoryQueueStandIn(clock=clock)
    queue.put("a", partition="p0", partition_ttl=60)
    queue.put("b", partition="p1")  # default TTL of 24 hours

    clock.now += 59
    assert queue.len(partition="p0") == 1
    queue.put("c", partition="p0", partition_ttl=60)  # a put restarts the TTL
    clock.now += 59
    assert queue.len(partition="p0") == 2
    clock.now += 1
    assert queue.len(partition="p0") == 0
    assert queue.get_many(10, block=False, partition="p0") == []
    assert queue.len(partition="p1") == 1
    clock.now += 24 * 3600
    assert queue.len(total=True) == 0


def test_nonblocking_timeout_warns():
    queue = InMemoryQueueStandIn()
    with pytest.warns(UserWarning, match="timeout is ignored for a non-blocking get"):
        assert queue.get_many(1, block=False, timeout=1, partition="p0") == []
    with pytest.warns(UserWarning, match="timeout is ignored for a non-blocking put"):
        queue.put("x", block=False, timeout=1, partition="p0")
