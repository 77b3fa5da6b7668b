"""The partitioned transport's set-aside log lines list the oldest entry ids and count them all."""

from __future__ import annotations

import asyncio

import structlog.testing

from consumer.transports.partitioned import PartitionedStreamTransport
from producer.publisher import Producer
from rewardpilot.connection import connect_async
from rewardpilot.logs import LOGGED_ENTRY_IDS
from rewardpilot.partitions import partition_of, partition_stream
from test_partitions import make_transactions, read_and_die, run_pools, settings_for

SET_ASIDE = "entries set aside for the dead-letter stream"
DELETED_ON_TAKEOVER = "pending entries were deleted from the stream; setting them aside"


def lines_of(logs: list[dict], event: str) -> list[dict]:
    return [line for line in logs if line["event"] == event]


def alice_stream(keys, partitions: int = 2) -> str:
    return partition_stream(keys, partitions, partition_of("alice", partitions))


def test_poison_log_lists_ids(redis_url, sync_client, keys):
    Producer(sync_client, keys, max_backlog=None, partitions=2).publish_many(make_transactions(12, ["alice"]))
    settings = settings_for(keys, partitions=2, batch_size=8, lease_ms=500, max_deliveries=1)

    abandoned = asyncio.run(read_and_die(redis_url, settings))
    with structlog.testing.capture_logs() as logs:
        asyncio.run(run_pools(redis_url, settings, ["survivor"]))

    assert len(abandoned) == 8
    lines = lines_of(logs, SET_ASIDE)
    assert len(lines) == 1
    assert lines[0]["entry_ids"] == abandoned[:LOGGED_ENTRY_IDS]
    assert lines[0]["entries"] == 8
    assert "max_deliveries" in lines[0]["reason"]
    assert lines[0]["stream"] == alice_stream(keys)
    assert lines[0]["partition"] == partition_of("alice", 2)
    assert sync_client.xlen(keys.dead_letters) == 8


def test_deleted_on_takeover_lists_ids(redis_url, sync_client, keys):
    Producer(sync_client, keys, max_backlog=None, partitions=2).publish_many(make_transactions(12, ["alice"]))
    settings = settings_for(keys, partitions=2, batch_size=8, lease_ms=500)

    abandoned = asyncio.run(read_and_die(redis_url, settings))
    deleted = abandoned[:7]
    assert sync_client.xdel(alice_stream(keys), *deleted) == 7
    with structlog.testing.capture_logs() as logs:
        asyncio.run(run_pools(redis_url, settings, ["survivor"]))

    lines = lines_of(logs, DELETED_ON_TAKEOVER)
    assert len(lines) == 1
    assert lines[0]["entry_ids"] == deleted[:LOGGED_ENTRY_IDS]
    assert lines[0]["entries"] == 7
    assert "count" not in lines[0]
    assert lines[0]["stream"] == alice_stream(keys)
    assert sync_client.xlen(keys.dead_letters) == 7
    assert sync_client.xlen(keys.results()) == 5


async def read_give_back_and_lose(url, settings, stream: str, lose: int):
    """Read one batch, give it back, delete its first ``lose`` entries, and read again.

    Returns the deleted ids, the log lines of the second read and what ``reclaim`` returns next.
    """
    client = connect_async(url, block_ms=settings.block_ms)
    transport = PartitionedStreamTransport(client, settings, "solo")
    try:
        await transport.open()
        batch = []
        for _ in range(50):
            batch = await transport.read(settings.batch_size, settings.block_ms)
            if batch:
                break
        ids = [delivery.entry_id for delivery in batch]
        await transport.give_back(ids)
        await client.xdel(stream, *ids[:lose])

        with structlog.testing.capture_logs() as logs:
            again = await transport.read(settings.batch_size, settings.block_ms)
        assert again == []  # the rest of the batch waits until the lost entries are dead-lettered
        return ids[:lose], logs, await transport.reclaim()
    finally:
        await transport.close()
        await client.aclose()


def test_lost_on_read_lists_ids(redis_url, sync_client, keys):
    Producer(sync_client, keys, max_backlog=None, partitions=2).publish_many(make_transactions(10, ["alice"]))
    settings = settings_for(keys, partitions=2, batch_size=8)

    deleted, logs, reclaimed = asyncio.run(read_give_back_and_lose(redis_url, settings, alice_stream(keys), 6))

    lines = lines_of(logs, SET_ASIDE)
    assert len(deleted) == 6
    assert len(lines) == 1
    assert lines[0]["entry_ids"] == deleted[:LOGGED_ENTRY_IDS]
    assert lines[0]["entries"] == 6
    assert lines[0]["reason"] == "deleted from the stream while pending"
    assert lines[0]["stream"] == alice_stream(keys)
    assert reclaimed.lost == deleted
    assert reclaimed.poison == []
