"""Partitioning the transactions by user id across several streams.

With ``P`` partitions, a user's transactions all go to the stream
``{base}transactions:p{N}`` with ``N = crc32(user_id) % P``, so one user's
transactions keep their order in one stream, and each partition is worked by
one consumer at a time (see ``consumer.transports.partitioned``). With one
partition, the default, transactions stay on the single stream
``{base}transactions`` that data published before partitioning lives on.

The count is stored under ``{base}partitions`` on first use. A producer or
consumer started with another count for the same prefix is rejected, because
it would route users to streams that the others do not read. To change the
count, stop publishing, drain the streams, delete ``{base}partitions`` and
start the consumers with the new count. A running ``producer.Producer``
checks the stored count before each chunk: one built without a count follows
the new count, and one built with another count, or one that finds the count
deleted, raises ``PartitionCountError`` in place of publishing.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from rewardpilot.streams import StreamKeys

# redis-py is used only in annotations here. Importing it at run time would add it
# to every CLI start, because the --partitions help text reads MAX_PARTITIONS.
if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

PARTITIONS_ENV = "RP_PARTITIONS"
MAX_PARTITIONS = 1024


class PartitionCountError(ValueError):
    """A partition count is invalid or differs from the one stored for the prefix."""


def partition_of(user_id: str, partitions: int) -> int:
    """Return the partition of ``user_id``: CRC-32 of its UTF-8 bytes modulo ``partitions``.

    CRC-32 (``zlib.crc32``) gives the same value in every process and Python
    version, unlike ``hash()``, which is salted per process for strings.
    """
    return zlib.crc32(user_id.encode("utf-8")) % partitions


def partition_stream(keys: StreamKeys, partitions: int, partition: int) -> str:
    """Return the transactions stream of one partition; the single stream when there is one."""
    if partitions == 1:
        return keys.transactions
    return f"{keys.transactions}:p{partition}"


def partition_streams(keys: StreamKeys, partitions: int) -> list[str]:
    """Return every partition's transactions stream, in partition order."""
    return [partition_stream(keys, partitions, partition) for partition in range(partitions)]


def streams_beyond(keys: StreamKeys, partitions: int) -> list[str]:
    """Return the partition streams that a prefix of ``partitions`` partitions does not read.

    They are ``p{partitions}`` to ``p{MAX_PARTITIONS - 1}``, or every
    partition stream when the prefix uses the single stream. Entries land
    there only when something routed by another count than the stored one.
    """
    first = 0 if partitions == 1 else partitions
    return [f"{keys.transactions}:p{partition}" for partition in range(first, MAX_PARTITIONS)]


def count_key(keys: StreamKeys) -> str:
    """Return the key that stores the partition count of a prefix (and job)."""
    return f"{keys.base}partitions"


def lease_key(keys: StreamKeys, group: str, partition: int) -> str:
    """Return the key whose value is the consumer of ``group`` holding a partition's lease.

    Each consumer group (the live run, every replay run) has its own leases,
    so a replay never waits for the live consumers.
    """
    return f"{keys.base}lease:{group}:p{partition}"


def members_key(keys: StreamKeys, group: str) -> str:
    """Return the sorted set of live consumers of ``group``, scored by heartbeat expiry (ms)."""
    return f"{keys.base}lease:{group}:consumers"


def check_count(partitions: int) -> int:
    """Return ``partitions`` when it is a whole number from 1 to ``MAX_PARTITIONS``; raise otherwise."""
    if isinstance(partitions, bool) or not isinstance(partitions, int) or not 1 <= partitions <= MAX_PARTITIONS:
        raise PartitionCountError(
            f"invalid partition count {partitions!r}: use a whole number from 1 to {MAX_PARTITIONS}"
        )
    return partitions


def stored_count(client: redis.Redis, keys: StreamKeys) -> int:
    """Return the partition count stored for a prefix, or 1 when none is stored, without storing one.

    Tools that only read or move existing entries (status, trim, dead-letter
    redrive) use this, so running them on a fresh prefix does not fix its count.
    """
    stored = client.get(count_key(keys))
    return int(stored) if stored is not None else 1


def _mismatch(keys: StreamKeys, requested: int, stored: int) -> PartitionCountError:
    return PartitionCountError(
        f"partition count {requested} does not match the {stored} partitions stored in "
        f"{count_key(keys)} for this prefix: start with --partitions {stored} ({PARTITIONS_ENV}={stored}), "
        f"or use another prefix; to change the count, drain the streams and delete {count_key(keys)}"
    )


def _resolve(keys: StreamKeys, requested: int | None, stored) -> tuple[int, bool]:
    """Return the count to use and whether it must be stored, given the stored value."""
    if requested is not None:
        check_count(requested)
    if stored is None:
        return (requested or 1), True
    stored_count = int(stored)
    if requested is not None and requested != stored_count:
        raise _mismatch(keys, requested, stored_count)
    return stored_count, False


def agree_count(client: redis.Redis, keys: StreamKeys, requested: int | None = None) -> int:
    """Store or check the partition count of a prefix; return the count to use.

    ``requested`` None adopts the stored count, or 1 when none is stored.
    Raises ``PartitionCountError`` when ``requested`` differs from the stored count.
    """
    stored = client.get(count_key(keys))
    count, store = _resolve(keys, requested, stored)
    if store and not client.set(count_key(keys), count, nx=True):
        # Another process stored a count between the GET and the SET.
        return agree_count(client, keys, requested)
    return count


async def agree_count_async(client: aioredis.Redis, keys: StreamKeys, requested: int | None = None) -> int:
    """Store or check the partition count of a prefix, like ``agree_count``, on an asyncio client."""
    stored = await client.get(count_key(keys))
    count, store = _resolve(keys, requested, stored)
    if store and not await client.set(count_key(keys), count, nx=True):
        return await agree_count_async(client, keys, requested)
    return count
