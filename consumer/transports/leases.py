"""Partition leases in Redis: which consumer of a group works which partition.

A lease is a key ``{base}lease:{group}:p{N}`` whose value is the holder's
consumer name, set with NX and a time to live (PX). The holder renews it
while it runs and deletes it when it stops. A holder that dies stops
renewing, the key expires, and another consumer takes the partition.

Live consumers register in a sorted set scored by the server time (ms) at
which their registration expires. Each consumer works out its target from
the live names sorted: with ``n`` live consumers, ``partitions // n`` each,
plus one for the first ``partitions % n`` names. The targets add up to the
partition count and none exceeds ``ceil(partitions / n)``. A consumer above
its target releases leases, and one below takes free leases, so with at
least as many partitions as consumers each live consumer ends up holding
some. A dead consumer counts as live until its registration expires, one
lease time after its last heartbeat.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from rewardpilot.partitions import lease_key, members_key
from rewardpilot.streams import StreamKeys

# KEYS[1] the members sorted set. ARGV[1] this consumer, ARGV[2] lease ms.
# Registers this consumer until now + lease ms (server time), removes
# members whose registration expired, and returns the live members.
_HEARTBEAT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# KEYS[1] a lease. ARGV[1] this consumer, ARGV[2] lease ms.
# Extends the lease and returns 1 when this consumer holds it; 0 otherwise.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 0
"""

# KEYS[1] a lease. ARGV[1] this consumer. Deletes it only when this consumer holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Leases:
    """The leases one consumer (``consumer``) of ``group`` takes on ``partitions`` partitions."""

    def __init__(self, client: aioredis.Redis, keys: StreamKeys, group: str, consumer: str,
                 partitions: int, lease_ms: int):
        self.client = client
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.partitions = partitions
        self.lease_ms = lease_ms
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def key(self, partition: int) -> str:
        return lease_key(self.keys, self.group, partition)

    async def target(self) -> int:
        """Register this consumer as live; return how many partitions it should hold."""
        live = await self._heartbeat(keys=[members_key(self.keys, self.group)],
                                     args=[self.consumer, self.lease_ms])
        return fair_share(self.partitions, [_text(name) for name in live], self.consumer)

    async def acquire(self, partition: int) -> bool:
        """Take the lease of a partition nobody holds; return whether this consumer got it."""
        return bool(await self.client.set(self.key(partition), self.consumer, nx=True, px=self.lease_ms))

    async def renew(self, partition: int) -> bool:
        """Extend the lease of a partition; return False when this consumer no longer holds it."""
        return bool(await self._renew(keys=[self.key(partition)], args=[self.consumer, self.lease_ms]))

    async def release(self, partition: int) -> None:
        """Delete the lease of a partition if this consumer still holds it."""
        await self._release(keys=[self.key(partition)], args=[self.consumer])

    async def leave(self) -> None:
        """Remove this consumer from the live members, so the others' shares grow now."""
        await self.client.zrem(members_key(self.keys, self.group), self.consumer)

    async def holders(self) -> dict[int, str | None]:
        """Return each partition's lease holder, None where the lease is free."""
        values = await self.client.mget([self.key(partition) for partition in range(self.partitions)])
        return {partition: _text(value) if value is not None else None for partition, value in enumerate(values)}


def fair_share(partitions: int, live: list[str], consumer: str) -> int:
    """Return the number of partitions ``consumer`` should hold among the ``live`` consumers.

    Every consumer computes the same split from the same member names, so
    the targets add up to ``partitions``. ``consumer`` counts as live even
    when ``live`` lacks it.
    """
    names = sorted(set(live) | {consumer})
    base, remainder = divmod(partitions, len(names))
    return base + (1 if names.index(consumer) < remainder else 0)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value
