"""Publishing transactions to the transactions stream with pipelined XADD.

``Producer`` adds transactions in chunks. With a deduplication window, each
chunk goes through one Lua script that, for every transaction without a
published marker, adds the entry and then sets the marker to its id, with
the window as its TTL. Check, XADD and marker are one step that no other
command interleaves with, so a transaction is never added twice within the
window. Without a window, a chunk is one pipeline of XADDs.

Before a chunk the producer checks the stream's backlog (``backlog``) and
waits while it is above ``max_backlog``, so a slow consumer pool does not
make Redis grow without bound. The check runs once at least
``min(chunk_size, max_backlog)`` transactions have gone out since the last one.

Every chunk is also checked against the partition count stored in
``{prefix}partitions``, in the script or with one GET, so a count changed
while the producer runs is followed, or raises ``PartitionCountError``,
before the producer adds another entry by the old count.

A producer given a ``stop`` event raises ``PublishStopped`` once the event is
set: before its next chunk, or while a chunk waits for the backlog or for a
reconnect. So a stop signal does not wait for a consumer that is not reading.

The producer never trims the stream. Trimming by length (XADD MAXLEN) would
delete entries no consumer has read yet, so retention is ``rewardpilot
trim`` (``rewardpilot.retention``), which never removes an unread entry.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import chain, islice
from numbers import Integral, Real
from typing import Callable, Iterable, NoReturn

import redis

from producer.errors import (
    BacklogTimeout, InvalidOptionError, NotATransactionError, PartitionCountError, ProducerError, PublishInterrupted,
    PublishStopped, UnsupportedClientError,
)
from rewardpilot import codec, resp
from rewardpilot import partitions as partitioning
from rewardpilot.models import Transaction
from rewardpilot.partitions import MAX_PARTITIONS, PARTITIONS_ENV, count_key, partition_of, partition_stream
from rewardpilot.retention import MAX_AGE_DAYS, MAX_AGE_SECONDS
from rewardpilot.streams import StreamKeys, group_lag
from rewardpilot.logs import get_logger

log = get_logger(__name__)

DEFAULT_CHUNK_SIZE = 1000
DEFAULT_DEDUP_WINDOW_SECONDS = 24 * 60 * 60
DEFAULT_MAX_BACKLOG = 100_000
DEFAULT_POLL_SECONDS = 0.5
RECONNECT_DELAYS_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 5.0, 5.0)  # about 19 s in all
_END = object()  # the end of an iterable, for next()

# The maximum deduplication window: the 100 years (36,500 days) that
# `publish --dedup-window` and `run --keep` accept. Redis rejects a TTL whose
# expiry time in milliseconds overflows a 64-bit integer.
MAX_DEDUP_WINDOW_SECONDS = MAX_AGE_SECONDS
# A chunk is routed again at most this many times when the stored partition count changes under it.
MAX_PARTITION_RECOUNTS = 3

# KEYS[1] is the stream, KEYS[2] the partition count key and KEYS[3..n+2] the
# published markers. ARGV[1] is the marker TTL in seconds. ARGV[3] is the
# entry data of all n transactions, one after the other, and ARGV[2] their
# lengths in bytes, separated by commas. Two arguments in place of n make the
# command faster to pack. ARGV[4] is the partition count the chunk was routed
# by, and ARGV[5] a random token of this publish call.
#
# When the stored count differs from ARGV[4] (or is missing), nothing is
# added and the reply is the stored value as a bulk string ("" when missing).
# Otherwise the reply is an array with one element per transaction. It is
# the new entry id, or false (a nil reply) for a duplicate. A marker that
# contains this call's token was written by an earlier attempt of the same
# call whose reply was lost, so its entry id is returned in place of false.
#
# A marker is "<entry id> <token>". EXISTS checks it before the XADD, and SET
# writes it after, because EXISTS costs the server less than a SET NX that the
# marker's value then has to replace. A failed XADD (a key of the wrong type,
# out of memory) stops the script before the marker is set. The window is
# bounded (MAX_DEDUP_WINDOW_SECONDS), so SET EX cannot reject its TTL.
# NOTE: a SET that fails for another reason after its XADD (such as out of
# memory in between) leaves an entry without its marker, which a retry adds again.
_PUBLISH_ONCE = """
local stored = redis.call('GET', KEYS[2])
if tonumber(stored) ~= tonumber(ARGV[4]) then
    return stored or ''
end
local ttl = ARGV[1]
local data = ARGV[3]
local token = ARGV[5]
local ids = {}
local i = 2
local start = 1
for length in string.gmatch(ARGV[2], '%d+') do
    i = i + 1
    local stop = start + tonumber(length)
    if redis.call('EXISTS', KEYS[i]) == 0 then
        local id = redis.call('XADD', KEYS[1], '*', 'data', string.sub(data, start, stop - 1))
        redis.call('SET', KEYS[i], id .. ' ' .. token, 'EX', ttl)
        ids[i - 2] = id
    else
        local id, owner = string.match(redis.call('GET', KEYS[i]) or '', '^(%S+) (%S+)$')
        ids[i - 2] = (owner == token) and id or false
    end
    start = stop
end
return ids
"""
_PUBLISH_ONCE_SHA = hashlib.sha1(_PUBLISH_ONCE.encode()).hexdigest()


@dataclass
class PublishSummary:
    """Counts for one ``publish_many`` call, or for the part of it done before an error stopped it.

    The items are published in order, so the first ``processed`` items of the
    iterable were published or found to be duplicates. ``unconfirmed`` is
    the size of the chunk that was being sent when an error stopped the call
    (0 when the error came before it was sent): some of its items may be on
    the stream. With deduplication on, publishing the iterable again from
    item ``processed`` on is safe, because those items then count as duplicates.
    """

    published: int = 0
    duplicates: int = 0
    chunks: int = 0
    waits: int = 0
    duplicate_ids: list[str] = field(default_factory=list)
    unconfirmed: int = 0

    @property
    def processed(self) -> int:
        """The number of leading items published or found to be duplicates."""
        return self.published + self.duplicates


def backlog(client: redis.Redis, stream: str, group: str) -> int:
    """Return how many entries of ``stream`` the consumer group has not read yet.

    Uses the group's ``lag`` from XINFO GROUPS (Redis 7.0 and later), or 0 once
    the group has read the stream's last entry (``group_lag``). When the
    group does not exist yet, or Redis cannot compute the lag (after XDEL or
    trimming), every entry in the stream counts (XLEN), which overestimates.
    """
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:  # the stream does not exist yet
        return 0
    for info in groups:
        name = info.get("name") if isinstance(info, dict) else None
        if isinstance(name, bytes):
            name = name.decode()
        if name == group:
            # Redis's lag can be stale (see group_lag); XINFO STREAM is read only when it is not 0.
            lag = group_lag(info, client.xinfo_stream(stream) if info.get("lag") != 0 else None)
            if lag is not None:
                return lag
            break
    return int(client.xlen(stream))


def wait_for_backlog(
    client: redis.Redis,
    stream: str,
    group: str,
    max_backlog: int,
    *,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    max_wait_seconds: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    fix: str | None = None,
) -> bool:
    """Wait until the backlog of ``stream`` for ``group`` is at or below ``max_backlog``.

    Calls ``on_wait`` with a message once when waiting starts, ending with
    ``fix`` when given (what the user can do about it). Returns whether
    it waited. Raises ``BacklogTimeout`` after ``max_wait_seconds``; ``None``
    waits as long as it takes. Raises ``PublishStopped`` when ``stop`` is set
    while it waits.
    """
    deadline = None if max_wait_seconds is None else time.monotonic() + max_wait_seconds
    return _wait_until(client, stream, group, max_backlog, deadline=deadline, max_wait_seconds=max_wait_seconds,
                       poll_seconds=poll_seconds, on_wait=on_wait, stop=stop, fix=fix)


def _wait_until(
    client: redis.Redis,
    stream: str,
    group: str,
    max_backlog: int,
    *,
    deadline: float | None,
    max_wait_seconds: float | None,
    poll_seconds: float,
    on_wait: Callable[[str], None] | None,
    stop: threading.Event | None,
    fix: str | None,
) -> bool:
    """Wait as ``wait_for_backlog`` does, until ``deadline`` (a ``time.monotonic()`` value) at the latest.

    Several streams can share one deadline, so that ``max_wait_seconds``
    (named in the ``BacklogTimeout`` message) bounds their waits together.
    """
    current = backlog(client, stream, group)
    if current <= max_backlog:
        return False

    message = (f"backlog of {current} entries on {stream} (group {group}) is above {max_backlog}; "
               "waiting for consumers to read them")
    if fix:
        message += f". {fix}"
    log.info("backlog above limit; waiting", stream=stream, group=group, backlog=current, max_backlog=max_backlog)
    if on_wait is not None:
        on_wait(message)

    started = time.monotonic()
    while current > max_backlog:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise BacklogTimeout(
                f"backlog of {current} entries on {stream} (group {group}) stayed above {max_backlog}, and the "
                f"wait reached max_wait_seconds ({max_wait_seconds} s); start more consumers or raise the limit"
            )
        pause = poll_seconds if deadline is None else min(poll_seconds, deadline - now)
        if stop is None:
            time.sleep(pause)
        elif stop.wait(pause):
            log.info("stop requested while waiting for the backlog", stream=stream, backlog=current)
            raise PublishStopped(f"publishing stopped while the backlog of {stream} was {current} entries")
        current = backlog(client, stream, group)

    log.info("backlog back under limit; resuming", stream=stream, backlog=current, waited_seconds=round(time.monotonic() - started, 1))
    return True


class Producer:
    """Publish transactions to ``keys.transactions`` in pipelined chunks.

    ``client`` is a synchronous ``redis.Redis`` (``rewardpilot.connection.connect``).
    ``dedup_window_seconds`` is how long a published transaction_id is
    remembered, in whole seconds up to ``MAX_DEDUP_WINDOW_SECONDS`` (100
    years); 0 turns deduplication off.

    ``max_backlog`` is the number of unread entries (for ``group``, the live
    consumer group by default) above which publishing waits; ``None`` turns
    backpressure off. The backlog is checked before a chunk once at least
    ``min(chunk_size, max_backlog)`` transactions (at least 1) have been
    published since the last check, so one-at-a-time ``publish`` calls
    check it every ``max_backlog`` calls when that is below ``chunk_size``.
    Between checks the backlog can therefore grow past ``max_backlog`` by up
    to that many transactions, or by one chunk of ``publish_many``, plus
    whatever other producers add. With 0, each check waits until the group
    has read every entry on the stream, and before the group exists every
    entry counts as unread (``backlog``). ``max_wait_seconds`` bounds the
    whole wait of one check, over every partition stream together, after
    which ``BacklogTimeout`` is raised; ``None`` waits as long as it takes.
    ``on_wait`` is called with a message when a wait starts.

    ``partitions`` above 1 routes each transaction to its user's partition
    stream (``rewardpilot.partitions``); ``None`` uses the count stored for
    the prefix, or stores 1 when none is stored. A count out of range raises
    ``PartitionCountError`` here, and one that differs from the stored count
    raises it on the first publish. Each later chunk is checked against the
    stored count before it is added (see ``publish_chunk``). Once ``stop``
    (a ``threading.Event``) is set, ``publish_chunk`` raises
    ``PublishStopped`` in place of sending another chunk.

    ``maxlen`` is rejected: any value but None raises ``InvalidOptionError``,
    because trimming by length deletes entries that no consumer has read.
    Bound the stream with ``rewardpilot trim`` or ``rewardpilot.retention.trim``.
    Raises ``InvalidOptionError`` (a ``ValueError``) for an option out of
    range or of the wrong type, ``PartitionCountError`` (a ``ValueError``)
    for a partition count out of range, and ``UnsupportedClientError`` (a
    ``TypeError``) for an asyncio client or a URL in place of a client.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: StreamKeys,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        dedup_window_seconds: int = DEFAULT_DEDUP_WINDOW_SECONDS,
        max_backlog: int | None = DEFAULT_MAX_BACKLOG,
        group: str | None = None,
        maxlen: None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        max_wait_seconds: float | None = None,
        on_wait: Callable[[str], None] | None = None,
        partitions: int | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        _check_client(client)
        if maxlen is not None:
            raise InvalidOptionError(
                f"maxlen={maxlen!r} is not supported: trimming the stream by length deletes transactions "
                "that no consumer has read yet. Leave maxlen out, and bound the stream with "
                "`rewardpilot trim --older-than AGE` or rewardpilot.retention.trim, which never remove an unread entry"
            )
        if partitions is not None:
            _check_partitions(partitions)
        self.client = client
        self.keys = keys
        self.chunk_size = _whole_number("chunk_size", chunk_size, minimum=1)
        self.dedup_window_seconds = _whole_number(
            "dedup_window_seconds", dedup_window_seconds, minimum=0, maximum=MAX_DEDUP_WINDOW_SECONDS,
            fix=f"give 0 to turn deduplication off, or a whole number of seconds such as 86400 (one day) "
                f"up to {MAX_DEDUP_WINDOW_SECONDS} ({MAX_AGE_DAYS} days)",
        )
        self.max_backlog = None if max_backlog is None else _whole_number(
            "max_backlog", max_backlog, minimum=0, fix="give a number of entries such as 100000, or None for no limit",
        )
        if group is not None and (not isinstance(group, str) or not group):
            raise InvalidOptionError(f"group={group!r} is not a consumer group name; give a non-empty string, "
                                     f"or None for the live group {keys.group()!r}")
        self.group = group or keys.group()
        self.poll_seconds = _seconds("poll_seconds", poll_seconds, allow_zero=False)
        self.max_wait_seconds = None if max_wait_seconds is None else _seconds(
            "max_wait_seconds", max_wait_seconds, allow_zero=True,
        )
        self.on_wait = _check_on_wait(on_wait)
        self.stop = _check_stop_event(stop)
        self.waits = 0
        self._unchecked = 0  # transactions published since the last backlog check
        self._sending = False  # True once the current chunk is sent, so some of it may be on the stream
        self.requested_partitions = partitions
        self._partitions: int | None = None  # agreed with Redis on the first publish, then checked per chunk

    @property
    def backlog_check_interval(self) -> int:
        """The number of transactions published between two backlog checks at most, unless one chunk is larger."""
        return max(1, min(self.chunk_size, self.max_backlog if self.max_backlog is not None else self.chunk_size))

    def publish(self, transaction: Transaction) -> str | None:
        """Publish one transaction; return its entry id, or ``None`` if it is a duplicate.

        ``None`` means that a published marker for its transaction_id
        existed before this call: another call published it within
        ``dedup_window_seconds``. When this call lost a reply and retried
        (see ``publish_chunk``), the retry finds the marker that its first
        attempt set and returns that attempt's entry id.

        Raises ``NotATransactionError`` (a ``TypeError``) when ``transaction``
        is not a ``Transaction``, such as a dict: validate one with
        ``Transaction.model_validate(data)`` first. Raises
        ``PartitionCountError`` when the stored partition count was deleted
        or differs from ``partitions`` (see ``publish_chunk``).
        """
        if not isinstance(transaction, Transaction):
            raise _not_a_transaction("transaction", transaction, index=0)
        return self._publish_checked_chunk([transaction])[0]

    def publish_many(self, transactions: Iterable[Transaction]) -> PublishSummary:
        """Publish transactions chunk by chunk without holding more than one chunk.

        Every item must be a ``Transaction``; dicts are not validated here, so
        build each with ``Transaction.model_validate(data)``. An item of
        another type raises ``NotATransactionError`` naming its index before
        its chunk is sent. Once the first item is read, the partition count is
        agreed with Redis, and a ``PartitionCountError`` there comes with
        nothing published. Each chunk is checked against the stored count as
        ``publish_chunk`` describes.

        Every error that stops the call carries the ``PublishSummary`` of
        what was published before it in ``summary``. The producer's own
        errors (``NotATransactionError``, ``PartitionCountError``,
        ``PublishStopped`` once ``stop`` is set, ``BacklogTimeout``) are
        raised as they are. Any other
        ``Exception``, such as a ``ValidationError`` raised by the caller's
        generator or a Redis error that outlasted the retries, is raised as
        ``PublishInterrupted`` with the original as ``__cause__``, because a
        third-party exception cannot be given a summary. ``KeyboardInterrupt``
        propagates unchanged, so use ``stop`` to interrupt publishing with a count.
        """
        if isinstance(transactions, (Transaction, dict, str, bytes)) or not isinstance(transactions, Iterable):
            raise NotATransactionError(
                f"publish_many takes an iterable of Transaction, not a {type(transactions).__name__}; "
                "pass a list or generator of Transaction, or call publish(transaction) for one",
                index=None,
            )
        summary = PublishSummary()
        iterator = iter(transactions)
        try:
            first = next(iterator, _END)
        except Exception as error:
            _raise_with_summary(error, summary, unconfirmed=0)
        if first is _END:
            return summary
        # After the first item, so that an empty iterable stores no partition count for a new prefix.
        try:
            self._agree_partitions()
        except Exception as error:
            _raise_with_summary(error, summary, unconfirmed=0)
        iterator = chain((first,), iterator)

        chunk: list[Transaction] = []
        try:
            while True:
                self._sending = False
                chunk = list(islice(iterator, self.chunk_size))
                if not chunk:
                    break
                for offset, item in enumerate(chunk):
                    if not isinstance(item, Transaction):
                        raise _not_a_transaction(f"item {summary.processed + offset}", item,
                                                 index=summary.processed + offset)
                waits_before = self.waits
                ids = self._publish_checked_chunk(chunk)
                summary.chunks += 1
                summary.waits += self.waits - waits_before
                for transaction, entry_id in zip(chunk, ids):
                    if entry_id is None:
                        summary.duplicates += 1
                        summary.duplicate_ids.append(transaction.transaction_id)
                    else:
                        summary.published += 1
        except Exception as error:
            _raise_with_summary(error, summary, unconfirmed=len(chunk) if self._sending else 0)
        return summary

    def publish_chunk(self, chunk: list[Transaction]) -> list[str | None]:
        """Publish one chunk in one round trip per partition stream; return entry ids, ``None`` for duplicates.

        With a deduplication window, a lost connection or a timeout is retried
        with backoff (``RECONNECT_DELAYS_SECONDS``), because the publish-once
        script cannot add a transaction twice. Without a window the error is
        raised, since a retry could add the chunk twice. When a reply was
        lost after the script ran, the retry returns the entry ids that the
        lost attempt added: their markers contain a random token of this call.

        The chunk is routed by the partition count agreed with Redis, and the
        script (or, without a window, one GET) first checks that count
        against the one stored in ``{prefix}partitions``. When it changed,
        a producer built without ``partitions`` routes the chunk by the new
        count, with a warning in the log. A producer built with another count
        raises ``PartitionCountError``, and so does any producer when the
        stored count was deleted or expired: deleting it starts a count
        change, so the producer publishes again only once a consumer (or a
        new ``Producer``) stores the new count. Nothing is added to a stream
        that the stored count does not include.

        Raises ``NotATransactionError`` naming the index of the first item
        that is not a ``Transaction``, with nothing sent. Raises
        ``PublishStopped`` when ``stop`` is set before the chunk is sent, or
        while it waits for the backlog or for a reconnect. A chunk stopped
        during a reconnect may have been added before the connection was lost.
        """
        for index, item in enumerate(chunk):
            if not isinstance(item, Transaction):
                raise _not_a_transaction(f"item {index}", item, index=index)
        return self._publish_checked_chunk(chunk)

    def _publish_checked_chunk(self, chunk: list[Transaction]) -> list[str | None]:
        """Publish a chunk whose items are known to be transactions, as ``publish_chunk`` describes."""
        self._sending = False
        if not chunk:
            return []
        self._check_stop(len(chunk))
        if not self.dedup_window_seconds:
            self._apply_backpressure(len(chunk))
            self._sending = True
            return self._send(chunk, token="")

        # Every attempt of this call sends the same token, so a retry finds the markers
        # of an attempt whose reply was lost.
        token = secrets.token_hex(8)
        for attempt, delay in enumerate(RECONNECT_DELAYS_SECONDS, start=1):
            try:
                self._apply_backpressure(len(chunk))
                self._sending = True
                return self._send(chunk, token)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("Redis unreachable while publishing; retrying", error=str(exc),
                            attempt=attempt, retry_in_seconds=delay, chunk_size=len(chunk))
                if self.stop is None:
                    time.sleep(delay)
                else:
                    self.stop.wait(delay)
                self._check_stop(len(chunk))

        self._apply_backpressure(len(chunk))
        self._sending = True
        return self._send(chunk, token)

    def _check_stop(self, size: int) -> None:
        if self.stop is not None and self.stop.is_set():
            raise PublishStopped(f"publishing stopped before a chunk of {size} transactions was sent")

    @property
    def partitions(self) -> int:
        """The partition count, stored or checked in Redis on first use, then as each chunk is sent."""
        return self._agree_partitions()

    def _agree_partitions(self) -> int:
        """Store or check the partition count in Redis on first use; return it."""
        if self._partitions is None:
            try:
                self._partitions = partitioning.agree_count(self.client, self.keys, self.requested_partitions)
            except partitioning.PartitionCountError as error:
                raise PartitionCountError(str(error)) from None
        return self._partitions

    def _follow_stored_count(self, routed_by: int, stored: str | bytes | None) -> None:
        """Adopt a stored partition count that differs from ``routed_by``, or raise ``PartitionCountError``."""
        key = count_key(self.keys)
        if isinstance(stored, bytes):
            stored = stored.decode("utf-8", errors="replace")
        if not stored:
            noun = "partition" if routed_by == 1 else "partitions"
            raise PartitionCountError(
                f"the partition count in {key} was deleted or expired after this producer published with "
                f"{routed_by} {noun}, so it cannot tell which streams the consumers read, and it added nothing "
                f"since. Deleting the count starts a count change: start the "
                f"consumers with the new count (rewardpilot consume --partitions N), which stores it, then "
                f"publish again. A producer built without partitions then follows the stored count"
            )
        try:
            count = partitioning.check_count(int(stored))
        except (ValueError, partitioning.PartitionCountError):
            raise PartitionCountError(
                f"{key} contains {stored!r}, which is not a valid partition count (1 to {MAX_PARTITIONS}); "
                f"drain the streams, delete {key} and start the consumers with --partitions N"
            ) from None
        if self.requested_partitions is not None and count != self.requested_partitions:
            raise PartitionCountError(
                f"the partition count stored in {key} changed from {routed_by} to {count}, and this producer "
                f"was built with partitions={self.requested_partitions}, so it added nothing since. "
                f"Build the Producer with partitions={count} ({PARTITIONS_ENV}={count} for the "
                f"CLI), or with partitions=None to follow the stored count"
            )
        log.warning("partition count changed while publishing; routing by the stored count",
                    key=key, previous=routed_by, stored=count)
        self._partitions = count

    def _send(self, chunk: list[Transaction], token: str) -> list[str | None]:
        """Publish a chunk by the stored partition count; keep the chunk's order in the reply."""
        for _ in range(MAX_PARTITION_RECOUNTS):
            count = self.partitions
            replies = self._send_routed(chunk, count, token)
            if replies is not None:
                return _entry_ids(replies)
        raise PartitionCountError(
            f"the partition count in {count_key(self.keys)} changed {MAX_PARTITION_RECOUNTS} times while "
            f"one chunk was sent; finish the count change (drain, then start the consumers with the new "
            f"--partitions) before publishing"
        )

    def _send_routed(self, chunk: list[Transaction], count: int, token: str) -> list | None:
        """Publish a chunk routed by ``count``, one script call or pipeline per stream.

        Returns the replies in the chunk's order, or ``None`` when the stored
        count differs from ``count`` and the producer adopted the stored
        one, so the caller routes the chunk again.
        """
        groups: dict[str, list[int]] = {}
        if count == 1:
            groups[self.keys.transactions] = list(range(len(chunk)))
        else:
            for index, transaction in enumerate(chunk):
                stream = partition_stream(self.keys, count, partition_of(transaction.user_id, count))
                groups.setdefault(stream, []).append(index)

        if not self.dedup_window_seconds:
            stored = self.client.get(count_key(self.keys))
            if _count_differs(stored, count):
                self._follow_stored_count(count, stored)
                return None

        replies: list = [None] * len(chunk)
        for stream, indexes in groups.items():
            reply = self._send_to(stream, [chunk[i] for i in indexes], count, token)
            if isinstance(reply, (bytes, str)):  # the script found another stored count and added nothing
                self._follow_stored_count(count, reply)
                return None
            for index, entry in zip(indexes, reply):
                replies[index] = entry
        return replies

    def _send_to(self, stream: str, chunk: list[Transaction], count: int, token: str) -> list | bytes | str:
        # Bytes, so that neither rewardpilot.resp nor redis-py encodes them again.
        payloads = codec.transactions_json(chunk)
        if self.dedup_window_seconds:
            marker_prefix = self.keys.published_marker("").encode()  # a marker is this prefix and the transaction_id
            # rewardpilot.resp packs the command in a fraction of the time
            # redis-py takes to encode a thousand marker keys one by one.
            command = resp.pack([
                "EVALSHA", _PUBLISH_ONCE_SHA, len(chunk) + 2, stream, count_key(self.keys),
                *[marker_prefix + transaction.transaction_id.encode() for transaction in chunk],
                self.dedup_window_seconds, ",".join(map(str, map(len, payloads))), b"".join(payloads), count, token,
            ])
            return self._evaluate(command)
        pipeline = self.client.pipeline(transaction=False)
        for payload in payloads:
            pipeline.xadd(stream, {codec.DATA: payload})
        return pipeline.execute()

    def _evaluate(self, packed: bytes) -> list | bytes | str:
        """Run a packed EVALSHA of the publish-once script, loading the script first if the server lacks it."""
        try:
            return resp.execute(self.client, packed)
        except redis.exceptions.NoScriptError:
            self.client.script_load(_PUBLISH_ONCE)
            return resp.execute(self.client, packed)

    def _apply_backpressure(self, size: int) -> None:
        """Check the backlog once ``backlog_check_interval`` transactions went out, and wait while it is too large.

        One deadline of ``max_wait_seconds`` covers the waits on every partition stream.
        """
        if self.max_backlog is None:
            return
        if self._unchecked and self._unchecked + size <= self.backlog_check_interval:
            self._unchecked += size
            return
        self._unchecked = size
        count = self.partitions
        deadline = None if self.max_wait_seconds is None else time.monotonic() + self.max_wait_seconds
        # NOTE: with partitions, each partition stream may hold its share of
        # max_backlog, so one busy user's partition waits before the total is reached.
        share = -(-self.max_backlog // count)
        waited = False
        for partition in range(count):
            waited |= _wait_until(
                self.client, partition_stream(self.keys, count, partition), self.group, share,
                deadline=deadline, max_wait_seconds=self.max_wait_seconds, poll_seconds=self.poll_seconds,
                on_wait=self.on_wait, stop=self.stop, fix=self._backlog_fix(),
            )
        if waited:
            self.waits += 1

    def _backlog_fix(self) -> str:
        """Return what a user can do about a backlog above ``max_backlog``: the consume command, or a higher limit."""
        job = f" --job {self.keys.job}" if self.keys.job else ""
        return (f"Start consumers in another shell (rewardpilot consume{job}, or consume --drain{job} to read "
                f"the backlog and exit), or raise the limit with --max-backlog (now {self.max_backlog})")


def _entry_ids(replies: list) -> list[str | None]:
    """Return the entry ids of a publish reply as text, None where the reply is empty (a duplicate)."""
    ids: list[str | None] = []
    for reply in replies:
        if not reply:
            ids.append(None)
        elif isinstance(reply, bytes):
            ids.append(reply.decode())
        else:
            ids.append(reply)
    return ids


def _check_client(client: object) -> None:
    """Raise ``UnsupportedClientError`` for a client the producer cannot publish with."""
    if isinstance(client, (str, bytes)):
        raise UnsupportedClientError(
            f"client {client!r} is a {type(client).__name__}, not a Redis client; "
            "pass rewardpilot.connection.connect(url) or redis.Redis.from_url(url)"
        )
    if inspect.iscoroutinefunction(getattr(client, "execute_command", None)):
        raise UnsupportedClientError(
            f"client {type(client).__module__}.{type(client).__name__} is an asyncio client; Producer publishes "
            "with a synchronous one: pass rewardpilot.connection.connect(url) or redis.Redis.from_url(url)"
        )


def _count_differs(stored: str | bytes | None, count: int) -> bool:
    """Return whether a stored partition count (a GET reply) is missing or differs from ``count``."""
    if stored is None:
        return True
    try:
        return int(stored) != count
    except ValueError:
        return True


def _check_partitions(count: object) -> int:
    """Return ``count`` when it is a valid partition count; raise the producer's ``PartitionCountError``."""
    try:
        return partitioning.check_count(count)
    except partitioning.PartitionCountError:
        raise PartitionCountError(
            f"partitions={count!r} is not a partition count; give a whole number from 1 to {MAX_PARTITIONS}, "
            "or None for the count stored for the prefix"
        ) from None


def _check_on_wait(on_wait: object) -> Callable[[str], None] | None:
    """Return ``on_wait`` when it is None or callable; raise ``InvalidOptionError``."""
    if on_wait is not None and not callable(on_wait):
        raise InvalidOptionError(
            f"on_wait={on_wait!r} is a {type(on_wait).__name__}, not a function; give a function that takes "
            "the wait message (a str), such as print, or None"
        )
    return on_wait


def _check_stop_event(stop: object) -> threading.Event | None:
    """Return ``stop`` when it is None or an event with ``is_set`` and a blocking ``wait``; raise otherwise.

    ``threading.Event`` and ``multiprocessing.Event`` pass. An ``asyncio.Event``
    does not, because its ``wait`` is a coroutine that would never block.
    """
    if stop is None:
        return None
    wait = getattr(stop, "wait", None)
    if (not callable(getattr(stop, "is_set", None)) or not callable(wait)
            or inspect.iscoroutinefunction(wait)):
        raise InvalidOptionError(
            f"stop={stop!r} is a {type(stop).__name__}, not a threading.Event; give a threading.Event "
            "and set it to stop publishing, or None"
        )
    return stop


def _whole_number(name: str, value: object, *, minimum: int, maximum: int | None = None, fix: str = "") -> int:
    """Return ``value`` as an int when it is a whole number from ``minimum`` to ``maximum``; raise otherwise.

    A float or Decimal with no fraction, such as 60.0, is accepted. A bool, a
    number with a fraction, NaN, infinity and anything that is not a number
    are rejected.
    """
    fix = fix or f"give a whole number of at least {minimum}"
    if isinstance(value, bool) or not isinstance(value, (Real, Decimal)):
        raise InvalidOptionError(f"{name}={value!r} is not a number; {fix}")
    if isinstance(value, Integral):
        number = int(value)
    elif math.isfinite(float(value)) and value == int(value):
        number = int(value)
    else:
        raise InvalidOptionError(f"{name}={value!r} is not a whole number; {fix}")
    if number < minimum:
        raise InvalidOptionError(f"{name}={value!r} is below {minimum}; {fix}")
    if maximum is not None and number > maximum:
        raise InvalidOptionError(f"{name}={value!r} is above {maximum}; {fix}")
    return number


def _seconds(name: str, value: object, *, allow_zero: bool) -> float:
    """Return ``value`` as seconds in a float; raise ``InvalidOptionError`` unless it is finite and above 0.

    With ``allow_zero``, 0 is accepted too.
    """
    limit = "0 or more" if allow_zero else "more than 0"
    if isinstance(value, bool) or not isinstance(value, (Real, Decimal)):
        raise InvalidOptionError(f"{name}={value!r} is not a number; give seconds, {limit}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise InvalidOptionError(f"{name}={value!r} is out of range; give seconds, {limit}")
    return seconds


def _not_a_transaction(label: str, item: object, *, index: int) -> NotATransactionError:
    """Build the error for an item that is not a ``Transaction``, with the way to make one."""
    kind = type(item).__name__
    fix = ("validate it with Transaction.model_validate(item) from rewardpilot.models and publish the result"
           if isinstance(item, dict) else "publish rewardpilot.models.Transaction objects")
    return NotATransactionError(f"{label} is a {kind}, not a rewardpilot.models.Transaction; {fix}", index=index)


def _raise_with_summary(error: Exception, summary: PublishSummary, *, unconfirmed: int) -> NoReturn:
    """Raise ``error`` with ``summary`` when it is a ``ProducerError``, else a ``PublishInterrupted`` from it."""
    summary.unconfirmed = unconfirmed
    if isinstance(error, ProducerError):
        error.summary = summary
        raise error
    interrupted = PublishInterrupted(_interrupted_message(error, summary))
    interrupted.summary = summary
    raise interrupted from error


def _interrupted_message(error: Exception, summary: PublishSummary) -> str:
    """Describe an error that stopped ``publish_many``: what it was and what the call had done before it."""
    text = (f"publishing stopped by {type(error).__name__} after {summary.processed} items: "
            f"{summary.published} published and {summary.duplicates} duplicates")
    if summary.unconfirmed:
        text += f"; some of the {summary.unconfirmed} items being sent may be on the stream"
    first_line = str(error).splitlines()[0] if str(error) else ""
    if first_line:
        text += f" ({first_line})"
    return (text + f". Fix the cause, then publish the items from index {summary.processed} on. "
            "The summary attribute has the counts, and __cause__ the original error")
