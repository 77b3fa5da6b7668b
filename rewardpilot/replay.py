"""Replay: process a range of the transactions stream again as a named run.

A replay reads through its own consumer group (``replay:{run}``), so the
live group's last-delivered id and pending entries are never touched. Its
results go to the run's own results stream, and the run's de-duplication
markers make a second replay of the same range under the same run name add
no results.

Each replay deletes and recreates its run's group at the entry just before
``start``. A group left by an earlier replay of the same run, including any
entries it still held pending, is therefore replaced rather than resumed.

Two replays of the same run at the same time would reset each other's
group, so a replay holds a lease on its run name (``RunLock``) while it
works, and a second one fails at once with ``ReplayBusyError``.

Outside a job, a run's results stream never expires, so its markers and cap
spend get no expiry either: were they to expire first, replaying the range
again would add every result a second time.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Callable

import redis
import redis.asyncio as aioredis

from consumer.build import CallOptions, build_pool
from consumer.errors import InvalidRateLimitError
from consumer.settings import RUN_NAME_PATTERN, RUN_NAME_RULE, ConsumerSettings, InvalidSettingsError
from consumer.stats import PoolStats
from rewardpilot.orchestrator.api_key import InvalidApiKeyError
from rewardpilot.partitions import agree_count_async, partition_streams
from rewardpilot.codec import decode_result
from rewardpilot.engine import RulesEngine
from rewardpilot.logs import get_logger
from rewardpilot.money import usd_text
from rewardpilot.run_lock import DEFAULT_LEASE_MS, RunLock, RunLockHeld
from rewardpilot.streams import LIVE_RUN, StreamKeys, entry_key

# Both parts of a stream entry id are 64-bit unsigned numbers (XADD reference, https://redis.io/commands/xadd/).
MAX_SEQUENCE = 2**64 - 1
READ_CHUNK = 1000

_ENTRY_ID = re.compile(r"^(\d+)(?:-(\d+))?$")

# The default worker count of a replay. One worker settles each batch before
# it reads the next, so every user's transactions are recommended in stream
# order, and each replay of a range puts capped bonuses on the same purchases.
DEFAULT_REPLAY_WORKERS = 1

log = get_logger("replay")


class InvalidReplayError(ValueError):
    """A replay option (start, end, run name, workers, batch size, wallet, TTL or orchestrator URL) is invalid."""


class ReplayBusyError(InvalidReplayError):
    """Another replay of the same run is running; ``holder`` names its process when known.

    ``expires_in_ms`` is the lock key's PTTL when the replay failed: -2 when
    the key is already gone, -1 when it has no expiry, None when not read.
    """

    def __init__(self, run: str, holder: str | None, since: str | None, *, lock_key: str | None = None,
                 expires_in_ms: int | None = None):
        self.run = run
        self.holder = holder
        self.expires_in_ms = expires_in_ms
        owner = f"by {holder} since {since}" if holder else "by another process"
        message = (f"run {run!r} is already being replayed {owner}; wait for that replay to finish, "
                   "or replay under another run name (--run on the command line, run= in Python)")
        super().__init__(message + _lock_expiry_text(lock_key, expires_in_ms))


def _lock_expiry_text(lock_key: str | None, expires_in_ms: int | None) -> str:
    """Say when the lock of a replay that was killed expires, from the lock key's PTTL."""
    if lock_key is None or expires_in_ms is None:
        return ""
    if expires_in_ms == -2:
        return ". The lock was released just now, so the replay can run again"
    if expires_in_ms == -1:
        return (f". The lock {lock_key} has no expiry; if no replay of this run is running, "
                f"delete that key and run the replay again")
    lease_seconds = DEFAULT_LEASE_MS // 1000
    return (f". A running replay renews its lock every {lease_seconds // 3} s for {lease_seconds} s; "
            f"if that replay was killed, the lock expires in {math.ceil(expires_in_ms / 1000)} s")


@dataclass(frozen=True)
class ReplayRange:
    """The entries a replay covers, both ends inclusive, as stream ids."""

    start_id: str
    end_id: str | None = None

    @property
    def group_start_id(self) -> str:
        """Return the id just before ``start_id``, where the replay group starts reading."""
        milliseconds, sequence = entry_key(self.start_id)
        if sequence > 0:
            return f"{milliseconds}-{sequence - 1}"
        if milliseconds > 0:
            return f"{milliseconds - 1}-{MAX_SEQUENCE}"
        return "0-0"

    def contains(self, entry_id: str) -> bool:
        key = entry_key(entry_id)
        if key < entry_key(self.start_id):
            return False
        return self.end_id is None or key <= entry_key(self.end_id)


@dataclass
class Difference:
    """One transaction whose replayed recommendation differs from the live one."""

    transaction_id: str
    user_id: str
    live_card: str
    replay_card: str
    live_value_usd: Decimal
    replay_value_usd: Decimal

    @property
    def change_usd(self) -> Decimal:
        return self.replay_value_usd - self.live_value_usd


@dataclass
class Comparison:
    """The replay's recommendations beside the live run's, for the same transactions."""

    compared: int = 0
    missing_live: list[str] = field(default_factory=list)
    live_total_usd: Decimal = Decimal("0.00")
    replay_total_usd: Decimal = Decimal("0.00")
    differences: list[Difference] = field(default_factory=list)

    @property
    def total_change_usd(self) -> Decimal:
        return self.replay_total_usd - self.live_total_usd

    def as_dict(self) -> dict:
        return {
            "compared": self.compared,
            "differing": len(self.differences),
            "missing_live": self.missing_live,
            "live_total_usd": usd_text(self.live_total_usd),
            "replay_total_usd": usd_text(self.replay_total_usd),
            "total_change_usd": usd_text(self.total_change_usd),
            "differences": [
                {**asdict(row), "live_value_usd": usd_text(row.live_value_usd),
                 "replay_value_usd": usd_text(row.replay_value_usd), "change_usd": usd_text(row.change_usd)}
                for row in self.differences
            ],
        }


@dataclass
class ReplaySummary:
    """Counts of one replay: entries in the range delivered, results written now, duplicates skipped, dead letters.

    ``duplicates`` counts entries that got no outcome from this replay
    because the run already had one for their transaction_id (its marker
    existed): a result or a dead letter. Their outcome may be a dead letter,
    so the run's results stream can lack them. ``repeated_transaction_ids``
    counts those of them whose marker names another entry: the stream contains
    their transaction_id more than once (published again, or copied back by
    ``rewardpilot dlq redrive``), and the run settled that other entry, in
    this replay or an earlier one. The rest were settled themselves before,
    by an earlier replay under the same run name (or, rarely, by a settle of
    this replay that was retried after its reply was lost). ``results`` and
    ``dead_letters`` count what this replay wrote.
    ``read_past_end`` counts entries after the end id that the replay's group
    read in the same batches and acknowledged without an outcome.
    ``first_entry_id`` is the earliest entry of the transactions stream (of
    all partition streams) when the replay began, or None when it was empty.
    """

    run: str
    group: str
    start_id: str
    end_id: str | None
    user: str | None
    delivered: int = 0
    results: int = 0
    duplicates: int = 0
    repeated_transaction_ids: int = 0
    dead_letters: int = 0
    read_past_end: int = 0
    first_entry_id: str | None = None
    comparison: Comparison | None = None

    @property
    def settled_before(self) -> int:
        """Count the duplicates that were settled themselves before, as a rule by an earlier replay of the run."""
        return self.duplicates - self.repeated_transaction_ids

    @property
    def starts_after_first_entry(self) -> bool:
        """Whether the stream contained entries before ``start_id``, whose spend under caps the replay did not count."""
        return self.first_entry_id is not None and entry_key(self.first_entry_id) < entry_key(self.start_id)

    def as_dict(self) -> dict:
        summary = {name: value for name, value in asdict(self).items() if name != "comparison"}
        summary["starts_after_first_entry"] = self.starts_after_first_entry
        if self.comparison is not None:
            summary["comparison"] = self.comparison.as_dict()
        return summary



def parse_position(text: str, *, end: bool = False) -> str:
    """Return the stream id for a replay bound given as a stream id or an ISO 8601 time.

    ``1700000000000-3`` is taken as is. A bare millisecond time
    (``1700000000000``) or an ISO time (naive times are UTC) means the start
    of that millisecond for ``start`` and its last possible entry for ``end``,
    so both bounds include the whole millisecond. Stream ids are the times
    the entries were published, not purchase times.

    Raises InvalidReplayError when either part of an id is above 2^64 - 1,
    where Redis would reject it or read it as another id.
    """
    value = text.strip()
    match = _ENTRY_ID.match(value)
    if match:
        milliseconds, sequence = int(match.group(1)), match.group(2)
        _check_id_part(text, "milliseconds", milliseconds, end)
        if sequence is not None:
            _check_id_part(text, "sequence number", int(sequence), end)
            return f"{milliseconds}-{int(sequence)}"
        return _millisecond_bound(milliseconds, end)

    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidReplayError(
            f"{'end' if end else 'start'} {text!r} is neither a stream id (like 1700000000000-0) "
            "nor an ISO 8601 time (like 2026-11-01T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    milliseconds = int(moment.timestamp() * 1000)
    if milliseconds < 0:
        raise InvalidReplayError(f"{'end' if end else 'start'} {text!r} is before 1970, where no stream id exists")
    return _millisecond_bound(milliseconds, end)


def _check_id_part(text: str, part: str, value: int, end: bool) -> None:
    if value > MAX_SEQUENCE:
        raise InvalidReplayError(
            f"{'end' if end else 'start'} {text!r} is not a valid stream id: its {part} {value} is above "
            f"{MAX_SEQUENCE}; both parts of an id (milliseconds-sequence) are whole numbers from 0 to "
            f"{MAX_SEQUENCE} (2^64 - 1), such as 1700000000000-0"
        )


def _millisecond_bound(milliseconds: int, end: bool) -> str:
    return f"{milliseconds}-{MAX_SEQUENCE}" if end else f"{milliseconds}-0"


def parse_range(start: str, end: str | None = None) -> ReplayRange:
    """Parse both bounds; raise InvalidReplayError when the end is before the start."""
    replay_range = ReplayRange(parse_position(start), parse_position(end, end=True) if end else None)
    if replay_range.end_id and entry_key(replay_range.end_id) < entry_key(replay_range.start_id):
        raise InvalidReplayError(f"end {end!r} is before start {start!r}; swap them")
    return replay_range


def check_run_name(run: str) -> str:
    if run == LIVE_RUN:
        raise InvalidReplayError(f"run name {run!r} is the live run; choose another name, such as catalog-2026-12")
    if not isinstance(run, str) or not RUN_NAME_PATTERN.fullmatch(run):
        raise InvalidReplayError(f"run name {run!r} is invalid; {RUN_NAME_RULE}")
    return run


async def reset_group(client: aioredis.Redis, stream: str, group: str, start_id: str) -> None:
    """Delete the run's group if it exists and create it again at ``start_id``."""
    try:
        await client.xgroup_destroy(stream, group)
    except redis.ResponseError as exc:
        # Valkey 9.1 replies "requires the key to exist" for a missing stream,
        # such as a partition no user was routed to yet.
        message = str(exc).lower()
        if "no such key" not in message and "requires the key to exist" not in message:
            raise
    await client.xgroup_create(stream, group, id=start_id, mkstream=True)


async def replay_async(
    client: aioredis.Redis,
    keys: StreamKeys,
    *,
    start: str,
    end: str | None = None,
    user: str | None = None,
    run: str,
    workers: int = DEFAULT_REPLAY_WORKERS,
    batch_size: int = 500,
    block_ms: int = 200,
    wallet: list[str] | None = None,
    options: CallOptions | None = None,
    compare: bool = False,
    ttl_seconds: int | None = None,
    on_cancelled: Callable[[ReplaySummary], None] | None = None,
) -> ReplaySummary:
    """Process the transactions from ``start`` to ``end`` again as run ``run``.

    ``ttl_seconds`` is how long the run's result markers and cap spend live,
    and its results stream once the replay ends (EXPIRE LT, so a shorter TTL
    already set stays). ``rewardpilot replay --job`` passes the time the
    job's keys have left. ``None`` gives none of them an expiry, so the
    markers live as long as the results stream and a second replay of the
    range under the same run name adds no results.

    ``on_cancelled`` is called with the counts so far when the replay is
    cancelled, such as by a signal, before the CancelledError propagates.
    That summary has no comparison.

    ``options.rate`` caps this replay alone and never changes the rate the
    live consumers share. With ``options.orchestrator_url``, the replay's
    calls also take tokens from the live consumers' orchestrator bucket at
    their rate (``consumer.build.make_limiter``).

    ``workers`` is 1 by default, which recommends each user's transactions
    in stream order. More workers are faster, but on a single transactions
    stream two of them may settle a user's batches out of order, so a
    capped bonus can move to another transaction and ``compare`` lists that
    as a difference. With partitions (``rewardpilot.partitions``) each
    partition is read one batch at a time, so the order holds for any count.

    Raises InvalidReplayError for a bad bound, run name, TTL, worker count,
    batch size or wallet, and UnknownCardError (from ``rewardpilot.engine``)
    for a wallet card the catalog lacks, all before touching Redis.
    """
    run = check_run_name(run)
    replay_range = parse_range(start, end)
    if ttl_seconds is not None and ttl_seconds < 1:
        raise InvalidReplayError(f"ttl_seconds must be 1 or more, got {ttl_seconds}")
    try:
        settings = ConsumerSettings(
            keys=keys, run=run, workers=workers, batch_size=batch_size, block_ms=block_ms, drain=True,
            wallet=wallet, start_id=replay_range.group_start_id, end_id=replay_range.end_id,
            user_filter=user,
        )
    except InvalidSettingsError as exc:
        raise InvalidReplayError(f"{exc.field}={exc.value!r} is invalid: {exc.rule}") from None
    check_wallet_cards(wallet)
    if options is not None:
        options.check()
    # The cap spend of a replay run follows its markers, and 0 leaves both without expiry (settle.lua).
    settings.result_ttl_seconds = ttl_seconds if ttl_seconds is not None else 0
    summary = ReplaySummary(run=run, group=settings.group_name, start_id=replay_range.start_id,
                            end_id=replay_range.end_id, user=user)
    try:
        await _replay_and_compare(client, settings, replay_range, options, summary, compare=compare,
                                  ttl_seconds=ttl_seconds)
    except asyncio.CancelledError:
        if on_cancelled is not None:
            on_cancelled(summary)
        raise
    return summary


async def _replay_and_compare(client: aioredis.Redis, settings: ConsumerSettings, replay_range: ReplayRange,
                              options: CallOptions | None, summary: ReplaySummary, *, compare: bool,
                              ttl_seconds: int | None) -> None:
    """Replay the range under the run's lock, filling in ``summary`` as ``replay_async`` describes."""
    keys, run = settings.keys, settings.run
    settings.partitions = await agree_count_async(client, keys)
    if compare and settings.workers > 1 and settings.partitions == 1:
        log.warning(
            "more than one worker on a single stream may recommend a user's transactions out of stream order. "
            "That moves capped bonuses to other transactions, and the comparison lists those as differences. "
            "Replay with 1 worker (the default) to keep the order",
            run=run, workers=settings.workers,
        )
    summary.first_entry_id = await earliest_entry_id(client, partition_streams(keys, settings.partitions))
    lock_key = f"{keys.base}replay-lock:{run}"
    try:
        log_context = {"run": run, "job": keys.job} if keys.job else {"run": run}
        async with RunLock(client, lock_key, log_context=log_context):
            await _replay_under_lock(client, settings, replay_range, options, summary)
    except RunLockHeld as exc:
        raise ReplayBusyError(run, exc.holder, exc.since, lock_key=lock_key,
                              expires_in_ms=await client.pttl(lock_key)) from None
    if ttl_seconds is not None:
        # NOTE: a replay stopped by a signal or an error leaves its results stream without this expiry.
        # `rewardpilot replay --job` sets it afterwards with rewardpilot.job.expire_job_keys, but other callers do not.
        await client.expire(keys.results(run), ttl_seconds, lt=True)

    if compare:
        summary.comparison = await compare_runs(client, keys, run, replay_range, user=summary.user)


def check_wallet_cards(wallet: list[str] | None) -> None:
    """Raise UnknownCardError naming the first card of ``wallet`` the bundled catalog lacks.

    The check matches ``rewardpilot replay --wallet``: aliases such as
    "csp" pass, and the cards reach the consumer as given.
    """
    if not wallet:
        return
    catalog = RulesEngine.default().catalog
    for card in wallet:
        catalog.get(card)


async def earliest_entry_id(client: aioredis.Redis, streams: list[str]) -> str | None:
    """Return the smallest first entry id of ``streams``, or None when all are empty or missing."""
    first_ids = []
    for stream in streams:
        entries = await client.xrange(stream, count=1)
        if entries:
            first_id = entries[0][0]
            first_ids.append(first_id.decode() if isinstance(first_id, bytes) else first_id)
    return min(first_ids, key=entry_key, default=None)


async def _replay_under_lock(client: aioredis.Redis, settings: ConsumerSettings, replay_range: ReplayRange,
                             options: CallOptions | None, summary: ReplaySummary) -> None:
    """Reset the run's group on every partition stream, drain it, and remove it once nothing is pending.

    The pool's counts go into ``summary``, also when the replay is cancelled
    or fails. The pool is built first, so an invalid rate or orchestrator URL
    raises before any group exists: a group left behind would hold back trims.
    """
    try:
        pool = build_pool(client, settings, options, replay=True)
    except (InvalidRateLimitError, InvalidApiKeyError):
        raise
    except ValueError as exc:  # the recommender factory's error for an orchestrator URL it cannot use
        raise InvalidReplayError(str(exc)) from None

    streams = partition_streams(settings.keys, settings.partitions)
    try:
        for stream in streams:
            await reset_group(client, stream, settings.group_name, replay_range.group_start_id)
        await pool.run()
    finally:
        # After a cancellation too, the pool's stats count every settle it sent to Redis (ConsumerPool.run).
        _count_outcomes(summary, pool.stats)
        await pool.recommender.aclose()

    if await _all_settled(client, settings):
        # A finished replay's group would otherwise hold back `rewardpilot trim` forever.
        for stream in streams:
            await client.xgroup_destroy(stream, settings.group_name)


def _count_outcomes(summary: ReplaySummary, stats: PoolStats) -> None:
    """Copy the pool's counts into the summary, leaving out the entries read past the end id from ``delivered``."""
    summary.delivered = stats.delivered - stats.past_end
    summary.results = stats.results
    summary.duplicates = stats.duplicates
    summary.repeated_transaction_ids = stats.repeated_transaction_ids
    summary.dead_letters = stats.dead_letters
    summary.read_past_end = stats.past_end


async def _all_settled(client: aioredis.Redis, settings: ConsumerSettings) -> bool:
    """Return True when the replay's group holds no pending entry on any partition stream."""
    for stream in partition_streams(settings.keys, settings.partitions):
        try:
            summary = await client.xpending(stream, settings.group_name)
        except redis.ResponseError:
            continue  # no such group or stream: nothing pending there
        if summary["pending"]:
            return False
    return True


def replay(url: str, keys: StreamKeys, **options) -> ReplaySummary:
    """Run ``replay_async`` on a new client for ``url``; see it for the options."""
    from rewardpilot.connection import connect_async

    async def main() -> ReplaySummary:
        client = connect_async(url, block_ms=options.get("block_ms", 200))
        try:
            return await replay_async(client, keys, **options)
        finally:
            await client.aclose()

    return asyncio.run(main())


async def _results_in_range(client: aioredis.Redis, stream: str, replay_range: ReplayRange,
                            user: str | None) -> dict:
    """Return the results whose transaction entry lies in the range, by transaction_id.

    A result is written after its transaction, so results from ``start_id``
    onward hold every transaction of the range.
    """
    found = {}
    async for fields in _results_from(client, stream, replay_range.start_id):
        result = _decoded(stream, fields)
        if result is None or result.entry_id is None or not replay_range.contains(result.entry_id):
            continue
        if user is None or result.user_id == user:
            found[result.transaction_id] = result
    return found


async def _live_results_for(client: aioredis.Redis, stream: str, start_id: str, replayed: dict) -> dict:
    """Return the first live result from ``start_id`` onward for each transaction_id of ``replayed``, by transaction_id.

    ``replayed`` maps transaction ids to the replayed results, and a live
    result of another user under the same id is left out. The transaction
    entry a live result points at may lie outside the range: a dead letter
    redriven onto the stream is processed from a copy with a newer id. Each
    result's ``transaction_id`` field is checked before its payload is
    decoded, and the read stops once every replayed transaction has a
    result, so memory stays bounded by the size of ``replayed``.
    """
    found = {}
    if not replayed:
        return found
    async for fields in _results_from(client, stream, start_id):
        transaction_id = _text_field(fields, "transaction_id")
        if transaction_id is not None and (transaction_id not in replayed or transaction_id in found):
            continue
        result = _decoded(stream, fields)
        if result is None:
            continue
        replayed_result = replayed.get(result.transaction_id)
        if replayed_result is None or result.transaction_id in found or result.user_id != replayed_result.user_id:
            continue
        found[result.transaction_id] = result
        if len(found) == len(replayed):
            break
    return found


def _decoded(stream: str, fields: dict):
    """Decode a results-stream entry, or log it and return None when it is not a valid result."""
    try:
        return decode_result(fields)
    except (ValueError, KeyError) as exc:
        # Written by something other than a consumer; the comparison goes on without it.
        log.warning("results entry left out of the comparison: it is not a valid result", stream=stream,
                    transaction_id=_text_field(fields, "transaction_id"), error=str(exc).splitlines()[0])
        return None


async def _results_from(client: aioredis.Redis, stream: str, start_id: str):
    """Yield the fields of each entry of ``stream`` from ``start_id`` onward, read ``READ_CHUNK`` at a time."""
    cursor = start_id
    while True:
        entries = await client.xrange(stream, min=cursor, max="+", count=READ_CHUNK)
        for _entry_id, fields in entries:
            yield fields
        if len(entries) < READ_CHUNK:
            return
        last = entries[-1][0]
        cursor = "(" + (last.decode() if isinstance(last, bytes) else last)


def _text_field(fields: dict, name: str) -> str | None:
    """Return a field of a stream entry as text, whether the client decodes replies or not; None when missing."""
    value = fields.get(name, fields.get(name.encode()))
    return value.decode() if isinstance(value, bytes) else value


async def compare_runs(client: aioredis.Redis, keys: StreamKeys, run: str, replay_range: ReplayRange, *,
                       user: str | None = None) -> Comparison:
    """Compare the run's results with the live run's for the same transactions, matched by transaction_id.

    A transaction differs when the recommended card or its cash value changed.
    The live result is found by transaction_id, not by entry id, because a
    transaction that the live run dead-lettered and that was redriven has
    its live result on the redriven copy, outside the range. When the live
    results stream holds several results for one transaction_id (its marker
    expired and it was published again), the first from the range's start
    is compared.

    NOTE: this reads the live results stream from the range's start until
    every replayed transaction has a live result, or to its end when some
    have none, which is slow for an old range on a busy stream.
    """
    replayed = await _results_in_range(client, keys.results(run), replay_range, user)
    live = await _live_results_for(client, keys.results(LIVE_RUN), replay_range.start_id, replayed)

    comparison = Comparison()
    for transaction_id in sorted(replayed):
        new = replayed[transaction_id]
        old = live.get(transaction_id)
        if old is None:
            comparison.missing_live.append(transaction_id)
            continue

        comparison.compared += 1
        comparison.live_total_usd += old.rewards.cash_value_usd
        comparison.replay_total_usd += new.rewards.cash_value_usd
        card_changed = old.recommended_card.card_id != new.recommended_card.card_id
        if card_changed or old.rewards.cash_value_usd != new.rewards.cash_value_usd:
            comparison.differences.append(Difference(
                transaction_id=transaction_id, user_id=new.user_id,
                live_card=old.recommended_card.card_id, replay_card=new.recommended_card.card_id,
                live_value_usd=old.rewards.cash_value_usd, replay_value_usd=new.rewards.cash_value_usd,
            ))
    return comparison
