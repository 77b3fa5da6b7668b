"""Consumer-group housekeeping: create the group, measure its backlog, remove idle consumers."""

from __future__ import annotations

from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from rewardpilot.streams import entry_key, group_lag  # noqa: F401 (group_lag is re-exported)


@dataclass(frozen=True, slots=True)
class IdleConsumer:
    """A consumer removed from a group, with its idle time (ms) as XINFO CONSUMERS reported it."""

    name: str
    idle_ms: int


@dataclass(frozen=True, slots=True)
class Backlog:
    """A consumer group's unread entries (lag) and delivered-but-unacknowledged ones."""

    lag: int
    pending: int
    length: int

    @property
    def drained(self) -> bool:
        return self.lag == 0 and self.pending == 0


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def ensure_group(client: aioredis.Redis, stream: str, group: str, start_id: str = "0") -> bool:
    """Create the consumer group (and the stream) unless it exists; return True if created."""
    try:
        await client.xgroup_create(stream, group, id=start_id, mkstream=True)
        return True
    except redis.ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        raise


def _find_group(groups: list[dict], group: str) -> dict | None:
    for info in groups:
        if _text(info.get("name") or info.get(b"name")) == group:
            return info
    return None



def _lag_of(info: dict, stream_info: dict | None) -> int:
    """Return ``group_lag``, counting an unknown lag as 1: at least one entry is unread, but Redis cannot count them."""
    lag = group_lag(info, stream_info)
    return 1 if lag is None else lag


async def backlog(client: aioredis.Redis, stream: str, group: str) -> Backlog:
    """Return the group's lag and pending count (needs Redis 7.0 or later for lag)."""
    try:
        groups = await client.xinfo_groups(stream)
    except redis.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return Backlog(lag=0, pending=0, length=0)
        raise
    length = await client.xlen(stream)
    info = _find_group(groups, group)
    if info is None:
        return Backlog(lag=length, pending=0, length=length)
    stream_info = None
    if info.get("lag") != 0:  # a lag above 0 or unknown may be stale; see group_lag
        stream_info = await client.xinfo_stream(stream)
    return Backlog(lag=_lag_of(info, stream_info), pending=int(info.get("pending", 0)), length=length)


# Checks and deletes in one script, so that no consumer can read an entry
# between the check of its pending count and XGROUP DELCONSUMER, which would
# drop that entry from the pending entries list for good. XINFO CONSUMERS
# replies as a flat field/value list per consumer under the scripts' RESP2.
_REMOVE_IDLE_SCRIPT = """
local removed = {}
local min_idle = tonumber(ARGV[2])
for _, flat in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
    local consumer = {}
    for i = 1, #flat, 2 do
        consumer[flat[i]] = flat[i + 1]
    end
    if consumer['pending'] == 0 and consumer['idle'] >= min_idle and consumer['name'] ~= ARGV[3] then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], consumer['name'])
        table.insert(removed, consumer['name'])
        table.insert(removed, consumer['idle'])
    end
end
return removed
"""


async def remove_idle_consumers(client: aioredis.Redis, stream: str, group: str, min_idle_ms: int,
                                keep: str | None = None) -> list[IdleConsumer]:
    """Delete the group's consumers that hold no pending entries and have been idle at least ``min_idle_ms``.

    ``keep`` names a consumer never to delete (the caller's own). A consumer
    with pending entries always stays, because XGROUP DELCONSUMER would drop
    them unacknowledged. A missing stream or group removes nothing. A live
    consumer that was removed joins again when it next reads an entry.
    """
    try:
        reply = await client.eval(_REMOVE_IDLE_SCRIPT, 1, stream, group, min_idle_ms, keep or "")
    except redis.ResponseError as exc:
        message = str(exc)
        if "no such key" in message.lower() or "NOGROUP" in message:
            return []
        raise
    return [IdleConsumer(_text(reply[i]), int(reply[i + 1])) for i in range(0, len(reply), 2)]
