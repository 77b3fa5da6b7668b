"""The Redis stream transport: a consumer group on the transactions stream.

Reads with XREADGROUP COUNT/BLOCK, settles with one Lua script (results,
dead letters and XACK together), recovers with XAUTOCLAIM:

* entries that XAUTOCLAIM reports as deleted (trimmed while pending) are
  returned as lost (Redis 7.0 and later already dropped them from the
  pending entries list);
* entries delivered more than ``max_deliveries`` times are poison messages;
* the rest are handed to this consumer like a new micro-batch.
"""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis

from consumer.group import backlog, ensure_group
from consumer.settings import ConsumerSettings
from consumer.settle import Result, SettleCounts, Settler, SpendChecks
from consumer.transports.base import Delivery, Reclaimed
from rewardpilot import resp
from rewardpilot.logs import get_logger
from rewardpilot.models import DeadLetter
from rewardpilot.partitions import agree_count_async
from rewardpilot.streams import entry_key

MAX_RECLAIM_ROUNDS = 20  # bounds one recovery pass over a very long pending entries list


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value



def deliveries_of(reply) -> list[Delivery]:
    """Turn an XREADGROUP reply of one stream into deliveries, leaving out deleted entries.

    Takes the RESP2 shape (a list of [stream, entries] pairs) and the RESP3
    shape (a map of stream to entries). An entry is [id, [field, value, ...]],
    with nil in place of the fields when it was deleted while pending.
    """
    if not reply:
        return []
    entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
    deliveries = []
    for entry_id, flat in entries:
        if flat is None:
            continue
        values = iter(flat)
        deliveries.append(Delivery(_text(entry_id), dict(zip(values, values))))
    return deliveries


class MissingGroup:
    """Recreates a consumer group that vanished from under a transport, and logs why once per occurrence.

    The workers of one pool share the transport, so several of them see the
    same NOGROUP reply. ``seen`` before a read and ``recreate`` after its
    NOGROUP let only the first worker of the occurrence recreate and log.

    The log distinguishes two causes. When the stream still has entries that
    were added before the server last started (or the server did not restart
    since ``remember_start``), the group was deleted, and recreating it at 0
    reads every entry in the stream again. A missing or empty stream, or one
    whose entries all came after a restart, gets the lost-data message.
    NOTE: a group deleted from an empty stream gets the lost-data message too,
    because nothing in Redis tells the two apart then.
    """

    def __init__(self, client: aioredis.Redis, group: str, log):
        self.client = client
        self.group = group
        self.log = log
        self._generation = 0
        self._lock = asyncio.Lock()
        self._opened_ms: int | None = None  # server time at ``remember_start``

    async def remember_start(self) -> None:
        """Record the server's time, to tell later whether it restarted since."""
        try:
            self._opened_ms = await _server_time_ms(self.client)
        except redis.ResponseError as exc:  # TIME disabled, as some managed services do
            self.log.warning("TIME failed, so a lost consumer group is reported without the restart check",
                             error=str(exc))

    def seen(self) -> int:
        """Return the occurrence count to pass to ``recreate`` after the read that follows."""
        return self._generation

    async def recreate(self, streams: list[str], seen: int) -> None:
        """Recreate the group at 0 on each of ``streams`` that lacks it, unless another worker already did."""
        async with self._lock:
            if seen != self._generation:
                return
            restart_ms = await self._restart_since_open_ms()
            # Another consumer process may have recreated the group already, and then every stream counts.
            lacking = [stream for stream in streams if not await self._has_group(stream)] or streams
            missing: list[str] = []  # streams whose entries the server lost
            entries = 0  # entries in the other streams, read again from 0
            for stream in lacking:
                oldest = await self.client.xrange(stream, count=1)
                length = await self.client.xlen(stream) if oldest else 0
                lost = not oldest or (restart_ms is not None and _entry_time_ms(oldest[0][0]) >= restart_ms)
                if lost:
                    missing.append(stream)
                else:
                    entries += length
                await ensure_group(self.client, stream, self.group, "0")
            # Counted only now: a read sent while the group was being recreated can still get NOGROUP.
            self._generation += 1
        self._log(lacking, missing, entries)

    async def _has_group(self, stream: str) -> bool:
        try:
            groups = await self.client.xinfo_groups(stream)
        except redis.ResponseError as exc:
            if "no such key" in str(exc).lower():
                return False
            raise
        return any(_text(info.get("name")) == self.group for info in groups)

    async def _restart_since_open_ms(self) -> int | None:
        """Return the server time (ms) when it last started, when that was after ``remember_start``, else None."""
        if self._opened_ms is None:
            return None
        try:
            now_ms = await _server_time_ms(self.client)
            info = await self.client.info("server")
        except redis.ResponseError as exc:  # TIME or INFO disabled, as some managed services do
            self.log.warning("TIME or INFO failed, so the restart check is skipped", error=str(exc))
            return None
        # INFO reports the uptime in whole seconds, so the start lies within the second before now - uptime.
        # The latest possible start decides whether it restarted since, and the earliest is returned.
        uptime_ms = int(info.get("uptime_in_seconds", 0)) * 1000
        if now_ms - uptime_ms > self._opened_ms:
            return now_ms - uptime_ms - 1000
        return None

    def _log(self, streams: list[str], missing: list[str], entries: int) -> None:
        where = "the stream" if len(streams) == 1 else "the partition streams"
        if entries:
            self.log.warning(
                f"consumer group deleted; recreated at 0, reading the {entries} entries in {where} again; "
                "results already written are skipped as duplicates while their markers last (--marker-ttl)",
                streams=streams, entries=entries,
            )
        if missing and not entries:
            self.log.error(
                "consumer group missing: the Redis server lost its data (restarted without persistence?). "
                f"Recreating the group; entries that were in {where} are lost.",
                streams=missing,
            )
        elif missing:
            self.log.error(
                "consumer group missing on streams that lost their entries (a server restart without "
                "persistence?); entries that were in them are lost.",
                streams=missing,
            )


async def _server_time_ms(client: aioredis.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _entry_time_ms(entry_id: bytes | str) -> int:
    return int(_text(entry_id).split("-", 1)[0])


class RedisStreamTransport:
    """One consumer (``consumer``) of a consumer group on ``settings.keys.transactions``."""

    name = "redis-stream"

    def __init__(self, client: aioredis.Redis, settings: ConsumerSettings, consumer: str):
        self.client = client
        self.settings = settings
        self.consumer = consumer
        self.stream = settings.keys.transactions
        self.group = settings.group_name
        self.log = get_logger("transport", consumer=consumer, group=self.group)
        self.settler = Settler.for_settings(client, settings, group=self.group)
        self.missing_group = MissingGroup(client, self.group, self.log)
        self._reclaim_cursor = "0-0"

    async def open(self) -> None:
        """Create the group, after checking that the prefix uses the single stream (one partition)."""
        await agree_count_async(self.client, self.settings.keys, 1)
        created = await ensure_group(self.client, self.stream, self.group, self.settings.start_id)
        if created:
            self.log.info("consumer group created", stream=self.stream, start_id=self.settings.start_id)
        await self.missing_group.remember_start()

    async def read(self, count: int, block_ms: int | None) -> list[Delivery]:
        # Packed and parsed here rather than by redis-py, whose reply parsing runs in Python per entry.
        command = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count]
        if block_ms is not None:
            command += ["BLOCK", block_ms]
        command += ["STREAMS", self.stream, ">"]
        seen = self.missing_group.seen()
        try:
            reply = await resp.execute_async(self.client, resp.pack(command))
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.missing_group.recreate([self.stream], seen)
            return []
        return deliveries_of(reply)

    async def settle(self, results: list[tuple[str, Result]], dead_letters: list[DeadLetter],
                     acknowledge: list[str], checks: SpendChecks | None = None) -> SettleCounts:
        return await self.settler.settle(results, dead_letters, acknowledge_only=acknowledge, checks=checks)

    async def give_back(self, entry_ids: list[str]) -> None:
        """Lower each entry's delivery count again and make it claimable by anyone now."""
        counts = await self._delivery_counts(entry_ids)
        # One XCLAIM per entry, since each has its own count, in one round trip.
        async with self.client.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.xclaim(
                    self.stream, self.group, self.consumer, min_idle_time=0, message_ids=[entry_id],
                    idle=self.settings.visibility_timeout_ms,
                    retrycount=max(0, counts.get(entry_id, 1) - 1), justid=True,
                )
            await pipe.execute()

    async def touch(self, entry_ids: list[str]) -> None:
        """Reset the idle time of entries this consumer is still working on.

        XCLAIM with JUSTID resets the idle time without raising the delivery
        count, so recovery (in this process or another) does not take a batch
        that is only waiting for a retry, the breaker or the rate limiter.

        NOTE: XCLAIM with a minimum idle time of 0 also takes back an entry
        that another consumer has claimed in the meantime. Settlement skips
        transactions that already have an outcome, so that costs a duplicate
        call, not a duplicate result.
        """
        if entry_ids:
            await self.client.xclaim(self.stream, self.group, self.consumer, min_idle_time=0,
                                     message_ids=entry_ids, justid=True)

    async def reclaim(self) -> Reclaimed:
        found = Reclaimed()
        for _ in range(MAX_RECLAIM_ROUNDS):
            try:
                reply = await self.client.xautoclaim(
                    self.stream, self.group, self.consumer,
                    min_idle_time=self.settings.visibility_timeout_ms,
                    start_id=self._reclaim_cursor, count=self.settings.batch_size,
                )
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):
                    return found
                raise
            self._reclaim_cursor = _text(reply[0])
            claimed = [Delivery(_text(entry_id), fields) for entry_id, fields in reply[1] if fields is not None]
            found.lost += [_text(entry_id) for entry_id in (reply[2] if len(reply) > 2 else [])]

            if claimed:
                counts = await self._delivery_counts([delivery.entry_id for delivery in claimed])
                for delivery in claimed:
                    delivered = counts.get(delivery.entry_id, 1)
                    if delivered > self.settings.max_deliveries:
                        found.poison.append((delivery, delivered))
                    else:
                        found.deliveries.append(delivery)
            if self._reclaim_cursor == "0-0" or len(found.deliveries) >= self.settings.batch_size:
                break
        return found

    async def _delivery_counts(self, entry_ids: list[str]) -> dict[str, int]:
        if not entry_ids:
            return {}
        ordered = sorted(entry_ids, key=entry_key)
        rows = await self.client.xpending_range(
            self.stream, self.group, min=ordered[0], max=ordered[-1],
            count=len(ordered) * 2, consumername=self.consumer,
        )
        return {_text(row["message_id"]): int(row["times_delivered"]) for row in rows}

    async def drained(self) -> bool:
        """Return True when nothing is pending and nothing unread is left in range.

        With ``settings.end_id`` (a replay), entries after the end do not count,
        so the group is drained once it has read past the end.
        """
        state = await backlog(self.client, self.stream, self.group)
        if state.drained or state.pending or self.settings.end_id is None:
            return state.drained
        return entry_key(await self._last_delivered_id()) >= entry_key(self.settings.end_id)

    async def _last_delivered_id(self) -> str:
        for info in await self.client.xinfo_groups(self.stream):
            if _text(info["name"]) == self.group:
                return _text(info["last-delivered-id"])
        return "0-0"

    async def close(self) -> None:
        """Delete this consumer from the group when it holds no pending entries.

        XGROUP DELCONSUMER drops a consumer's pending entries, so a consumer
        that still holds some stays in the group for recovery to claim from.
        """
        try:
            summary = await self.client.xpending(self.stream, self.group)
            pending = sum(int(entry["pending"]) for entry in summary["consumers"]
                          if _text(entry["name"]) == self.consumer)
            if pending:
                # Given-back entries are claimable at once, and the rest after the visibility timeout.
                self.log.warning("consumer stopped with entries pending under its name; other consumers of "
                                 "the group claim them", pending=pending,
                                 visibility_timeout_ms=self.settings.visibility_timeout_ms)
                return
            await self.client.xgroup_delconsumer(self.stream, self.group, self.consumer)
        except redis.RedisError as exc:
            self.log.warning("could not leave the consumer group", error=str(exc))
