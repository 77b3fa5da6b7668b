"""Retention: trim old transactions by MINID without losing unprocessed entries.

``XTRIM MAXLEN`` deletes the oldest entries whether or not a consumer group
has read or acknowledged them. An entry trimmed while pending comes back from
XAUTOCLAIM as deleted and can only be dead-lettered, and an unread entry is
never seen at all. ``trim`` instead computes a MINID no later than:

* the cutoff (server time minus the requested age);
* for every consumer group, the first id after its last-delivered id (the
  oldest entry it may not have read yet);
* for every consumer group, its oldest pending entry.

A stream that no live consumer group reads yet is not trimmed at all. That
covers a stream without groups (``publish`` creates none) and one whose only
groups are replays' (``replay:NAME``). A replay reads the stream for its own
run, so its reads do not show what the live consumers still have to read.
Once a live group exists, a replay group limits the trim like any other
group, which keeps the entries a running replay has not read yet.

``XTRIM MINID`` (exact) then removes only entries older than that id. A
group is reported as holding the trim back only when some entry older than
the cutoff is kept because of it. A group that has read and acknowledged
everything has a limit just after the last entry, which removes as much as
the cutoff does, so it is not reported.

NOTE: the plan and the XTRIM are two steps. A replay group created in between at an
older id can find its first entries trimmed. Live groups only move forward,
so they are not affected.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import NamedTuple, Sequence

import redis
import redis.asyncio as aioredis

from rewardpilot.logs import get_logger

COUNT_CHUNK = 10_000
_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
# The maximum age parse_age accepts: 100 years of 365 days. Ages become Redis TTLs
# and stream ids in milliseconds, and a timedelta can be at most 999,999,999 days.
MAX_AGE_DAYS = 36_500
MAX_AGE_SECONDS = MAX_AGE_DAYS * 86_400

# StreamKeys.group names the group of replay run NAME "replay:NAME". Every other group is a live one.
REPLAY_GROUP_PREFIX = "replay:"

log = get_logger("retention")


class InvalidAgeError(ValueError):
    """A retention age such as ``30d`` could not be parsed."""


@dataclass
class TrimReport:
    """The outcome of one trim, or in a dry run the entries it would remove."""

    stream: str
    cutoff_id: str
    min_id: str
    removed: int
    dry_run: bool = False
    held_back_by: str | None = None
    # Number of entries older than the cutoff that ``held_back_by`` keeps, from ``min_id`` up to
    # the cutoff. It is 0 when no group held the trim back, and None when nothing was counted.
    held_back_count: int | None = None
    # True when the stream has no consumer group, so nothing was read and nothing is trimmed.
    no_consumer_group: bool = False
    # True when no group other than a replay's reads the stream, with or without replay groups,
    # so no live consumer has read it and nothing is trimmed.
    no_live_group: bool = False
    # The replay groups (replay:NAME) on the stream. Only the reads of live groups make an entry removable.
    replay_groups: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


class TrimPlan(NamedTuple):
    """The result of ``plan_min_id``: the cutoff, the safe MINID, and what held it back."""

    cutoff_id: str
    min_id: str
    held_back_by: str | None
    no_consumer_group: bool = False
    no_live_group: bool = False
    replay_groups: tuple[str, ...] = ()


def is_replay_group(group: str) -> bool:
    """Return whether ``group`` is a replay run's group, named ``replay:NAME`` by ``StreamKeys.group``."""
    return group.startswith(REPLAY_GROUP_PREFIX)


def parse_age(text: str) -> timedelta:
    """Parse an age such as ``90s``, ``15m``, ``12h``, ``30d`` or ``2w``.

    Raises ``InvalidAgeError`` naming the text when it is malformed, 0, or
    longer than ``MAX_AGE_DAYS`` days.
    """
    match = _AGE.match(text or "")
    digits = match.group(1).lstrip("0") if match else ""
    if not digits:
        raise InvalidAgeError(
            f"age {text!r} is invalid; write a positive whole number and a unit: s, m, h, d or w (such as 30d)"
        )
    # The length is checked first, because int() raises ValueError on more than 4,300 digits.
    seconds = int(digits) * _UNIT_SECONDS[match.group(2)] if len(digits) <= 20 else MAX_AGE_SECONDS + 1
    if seconds > MAX_AGE_SECONDS:
        raise InvalidAgeError(
            f"age {text!r} is too long; the maximum is {MAX_AGE_DAYS}d (100 years), so write a shorter age such as 365d"
        )
    return timedelta(seconds=seconds)


def age_text(seconds: int) -> str:
    """Write whole seconds as an age that ``parse_age`` reads, in the largest whole unit: 24h, 7d, 90m or 45s."""
    if seconds >= 2 * 86_400 and seconds % 86_400 == 0:
        return f"{seconds // 86_400}d"
    for unit, size in (("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _key(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _next_id(entry_id: str) -> str:
    milliseconds, sequence = _key(entry_id)
    return f"{milliseconds}-{sequence + 1}"


async def _server_ms(client: aioredis.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def plan_min_id(client: aioredis.Redis, stream: str, older_than: timedelta) -> TrimPlan:
    """Return the cutoff id, the safe MINID and the group that held the MINID back, or None.

    The group is None unless the stream has an entry from the MINID up to the
    cutoff, that is an entry older than the cutoff that the trim keeps. A
    stream without a live consumer group, one with no groups or with replay
    groups only, gets the MINID 0-0, which keeps every entry, and
    ``no_live_group`` True. Replay groups then hold nothing back, because
    the MINID keeps everything anyway.
    """
    cutoff_ms = await _server_ms(client) - int(older_than.total_seconds() * 1000)
    cutoff_id = f"{max(0, cutoff_ms)}-0"
    min_id, held_back_by = cutoff_id, None

    try:
        groups = await client.xinfo_groups(stream)
    except redis.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return TrimPlan(cutoff_id, cutoff_id, None)
        raise
    names = [_text(info["name"]) for info in groups]
    replay_groups = tuple(name for name in names if is_replay_group(name))
    if len(replay_groups) == len(names):
        # A replay's reads do not make an entry safe to remove: the live consumers may not have read it.
        return TrimPlan(cutoff_id, "0-0", None, no_consumer_group=not names, no_live_group=True,
                        replay_groups=replay_groups)

    for group, info in zip(names, groups):
        limits = [_next_id(_text(info["last-delivered-id"]))]
        if int(info.get("pending", 0)):
            summary = await client.xpending(stream, group)
            # The entries may have been acknowledged since XINFO GROUPS; then min is nil.
            if summary["min"] is not None:
                limits.append(_text(summary["min"]))
        for limit in limits:
            if _key(limit) < _key(min_id):
                min_id, held_back_by = limit, group

    if held_back_by is not None and not await client.xrange(stream, min=min_id, max=f"({cutoff_id}", count=1):
        # The slowest group's limit is below the cutoff, but no entry lies between them.
        held_back_by = None
    return TrimPlan(cutoff_id, min_id, held_back_by, replay_groups=replay_groups)


async def _count_before(client: aioredis.Redis, stream: str, min_id: str, *, start: str = "-") -> int:
    """Count entries from ``start`` to just before ``min_id`` by walking XRANGE in chunks."""
    if _key(min_id) == (0, 0):
        return 0  # nothing is older than 0-0, and XRANGE rejects the exclusive end "(0-0"
    count, cursor = 0, start
    while True:
        entries = await client.xrange(stream, min=cursor, max=f"({min_id}", count=COUNT_CHUNK)
        count += len(entries)
        if len(entries) < COUNT_CHUNK:
            return count
        cursor = "(" + _text(entries[-1][0])


async def trim(client: aioredis.Redis, stream: str, older_than: timedelta, *, dry_run: bool = False,
               count_held_back: bool = True) -> TrimReport:
    """Remove entries older than ``older_than`` that every consumer group has read and acknowledged.

    A stream without a live group (``plan_min_id``) loses nothing.

    With ``count_held_back``, a trim held back by a group also counts the
    entries older than the cutoff that it keeps, walking them with XRANGE.
    """
    plan = await plan_min_id(client, stream, older_than)
    cutoff_id, min_id, held_back_by = plan.cutoff_id, plan.min_id, plan.held_back_by
    if dry_run:
        removed = await _count_before(client, stream, min_id)
    else:
        removed = int(await client.xtrim(stream, minid=min_id, approximate=False))

    held_back_count = None
    if count_held_back:
        holds_back = held_back_by or plan.no_live_group
        held_back_count = await _count_before(client, stream, cutoff_id, start=min_id) if holds_back else 0

    report = TrimReport(stream=stream, cutoff_id=cutoff_id, min_id=min_id, removed=removed,
                        dry_run=dry_run, held_back_by=held_back_by, held_back_count=held_back_count,
                        no_consumer_group=plan.no_consumer_group, no_live_group=plan.no_live_group,
                        replay_groups=list(plan.replay_groups))
    if plan.no_live_group and (held_back_count or not count_held_back):
        log.warning("stream not trimmed: no live consumer group has read it yet", **report.as_dict())
    elif removed or held_back_by:
        log.info("stream trimmed" if not dry_run else "stream trim planned", **report.as_dict())
    return report


async def trim_loop(client: aioredis.Redis, streams: str | Sequence[str], older_than: timedelta,
                    interval_seconds: float, stopping: asyncio.Event) -> None:
    """Run ``trim`` on each stream every ``interval_seconds`` until ``stopping`` is set.

    ``streams`` is one stream name or several, such as every partition
    stream. Each stream gets its own safe MINID from its own consumer groups.
    An error on one stream is logged and the others are still trimmed. The
    entries a group holds back are not counted, because a group far behind
    would make every pass walk all of them.
    """
    streams = [streams] if isinstance(streams, str) else list(streams)
    while not stopping.is_set():
        for stream in streams:
            try:
                await trim(client, stream, older_than, count_held_back=False)
            except redis.RedisError as exc:
                log.warning("trim failed; trying again next interval", stream=stream, error=str(exc))
        try:
            await asyncio.wait_for(stopping.wait(), timeout=interval_seconds)
        except asyncio.TimeoutError:
            pass
