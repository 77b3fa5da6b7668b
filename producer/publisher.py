"""Publishing transactions to the transactions stream with pipelined XADD.

``Producer`` adds transactions in chunks. With a deduplication window, each
chunk goes through one Lua script that, for every transaction, adds the entry
only if no published marker exists for its transaction_id and then sets the
marker with the window as its TTL. Check, XADD and marker are one atomic step,
so a transaction is never added twice within the window and no marker exists
without its entry. Without a window, a chunk is one pipeline of XADDs.

Before each chunk the producer checks the stream's backlog (``backlog``) and
waits while it is above ``max_backlog``, so a slow consumer pool does not
make Redis grow without bound.

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
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import chain, islice
from numbers import Integral, Real
from typing import Callable, Iterable, NoReturn

import redis

from producer.errors import (
    BacklogTimeout, InvalidOptionError, NotATransactionError, ProducerError, PublishInterrupted, PublishStopped,
    UnsupportedClientError,
)
from rewardpilot import codec, resp
from rewardpilot.models import Transaction
from rewardpilot.partitions import PartitionCountError, agree_count, check_count, partition_of, partition_stream
from rewardpilot.streams import StreamKeys
from rewardpilot.logs import get_logger

log = get_logger(__name__)

DEFAULT_CHUNK_SIZE = 1000
DEFAULT_DEDUP_WINDOW_SECONDS = 24 * 60 * 60
DEFAULT_MAX_BACKLOG = 100_000
DEFAULT_POLL_SECONDS = 0.5
RECONNECT_DELAYS_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 5.0, 5.0)  # about 19 s in all
_END = object()  # the end of an iterable, for next()

# KEYS[1] is the stream, KEYS[2..n+1] the published markers. ARGV[1] is the
# marker TTL in seconds. ARGV[3] is the entry data of all n transactions, one
# after the other, and ARGV[2] their lengths in bytes, separated by commas.
# Two arguments in place of n make the command faster to pack. Returns the
# entry id per transaction, or false (a nil reply) where the marker already existed.
_PUBLISH_ONCE = """
local ttl = tonumber(ARGV[1])
local data = ARGV[3]
local ids = {}
local i = 1
local start = 1
for length in string.gmatch(ARGV[2], '%d+') do
    i = i + 1
    local stop = start + tonumber(length)
    if redis.call('EXISTS', KEYS[i]) == 1 then
        ids[i - 1] = false
    else
        local payload = string.sub(data, start, stop - 1)
        local id = redis.call('XADD', KEYS[1], '*', 'data', payload)
        redis.call('SET', KEYS[i], id, 'EX', ttl)
        ids[i - 1] = id
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

    Uses the group's ``lag`` from XINFO GROUPS (Redis 7.0 and later). When the
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
            lag = info.get("lag")
            if lag is not None:
                return int(lag)
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
        if max_wait_seconds is not None and time.monotonic() - started > max_wait_seconds:
            raise BacklogTimeout(
                f"backlog of {current} entries on {stream} (group {group}) stayed above {max_backlog} "
                f"for {max_wait_seconds} s; start more consumers or raise the limit"
            )
        if stop is None:
            time.sleep(poll_seconds)
        elif stop.wait(poll_seconds):
            log.info("stop requested while waiting for the backlog", stream=stream, backlog=current)
            raise PublishStopped(f"publishing stopped while the backlog of {stream} was {current} entries")
        current = backlog(client, stream, group)

    log.info("backlog back under limit; resuming", stream=stream, backlog=current, waited_seconds=round(time.monotonic() - started, 1))
    return True


class Producer:
    """Publish transactions to ``keys.transactions`` in pipelined chunks.

    ``client`` is a synchronous ``redis.Redis`` (``rewardpilot.connection.connect``).
    ``dedup_window_seconds`` is how long a published transaction_id is
    remembered, in whole seconds; 0 turns deduplication off. ``max_backlog``
    is the number of unread entries (for ``group``, the live consumer group
    by default) above which publishing waits, checked once per
    ``chunk_size`` transactions; ``None`` turns backpressure off. With 0,
    each check waits until the group has read every entry on the stream, and
    before the group exists every entry counts as unread (``backlog``).
    ``partitions`` above 1 routes each transaction to its user's partition
    stream (``rewardpilot.partitions``); ``None`` uses the count stored for
    the prefix, or 1 when none is stored. A count out of range raises
    ``PartitionCountError`` here, and one that differs from the stored count
    raises it on the first publish. Once ``stop`` is set, ``publish_chunk``
    raises ``PublishStopped`` in place of sending another chunk.

    ``maxlen`` is rejected: any value but None raises ``InvalidOptionError``,
    because trimming by length deletes entries that no consumer has read.
    Bound the stream with ``rewardpilot trim`` or ``rewardpilot.retention.trim``.
    Raises ``InvalidOptionError`` (a ``ValueError``) for an option out of
    range or of the wrong type, and ``UnsupportedClientError`` (a
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
            check_count(partitions)
        self.client = client
        self.keys = keys
        self.chunk_size = _whole_number("chunk_size", chunk_size, minimum=1)
        self.dedup_window_seconds = _whole_number(
            "dedup_window_seconds", dedup_window_seconds, minimum=0,
            fix="give 0 to turn deduplication off, or a whole number of seconds such as 86400 (one day)",
        )
        self.max_backlog = None if max_backlog is None else _whole_number(
            "max_backlog", max_backlog, minimum=0, fix="give a number of entries such as 100000, or None for no limit",
        )
        self.group = group or keys.group()
        self.poll_seconds = _seconds("poll_seconds", poll_seconds, allow_zero=False)
        self.max_wait_seconds = None if max_wait_seconds is None else _seconds(
            "max_wait_seconds", max_wait_seconds, allow_zero=True,
        )
        self.on_wait = on_wait
        self.stop = stop
        self.waits = 0
        self._unchecked = 0  # transactions published since the last backlog check
        self._sending = False  # True once the current chunk is sent, so some of it may be on the stream
        self.requested_partitions = partitions
        self._partitions: int | None = None  # agreed with Redis on the first publish

    def publish(self, transaction: Transaction) -> str | None:
        """Publish one transaction; return its entry id, or ``None`` if it is a duplicate.

        Raises ``NotATransactionError`` (a ``TypeError``) when ``transaction``
        is not a ``Transaction``, such as a dict: validate one with
        ``Transaction.model_validate(data)`` first.
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
        checked with Redis, and a ``PartitionCountError`` there is raised as
        it is, with nothing published.

        Every other error that stops the call carries the ``PublishSummary``
        of what was published before it in ``summary``. The producer's own
        errors (``NotATransactionError``, ``PublishStopped`` once ``stop`` is
        set, ``BacklogTimeout``) are raised as they are. Any other
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
        except PartitionCountError:
            raise
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
        """Publish one chunk in one round trip; return entry ids, ``None`` for duplicates.

        With a deduplication window, a lost connection or a timeout is retried
        with backoff (``RECONNECT_DELAYS_SECONDS``), because the publish-once
        script cannot add a transaction twice. Without a window the error is
        raised, since a retry could add the chunk twice.

        NOTE: when a reply is lost after the script ran, the retry reports the
        transactions it had added as duplicates (``None``), although they were
        published once by this call.

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
            return self._send(chunk)

        for attempt, delay in enumerate(RECONNECT_DELAYS_SECONDS, start=1):
            try:
                self._apply_backpressure(len(chunk))
                self._sending = True
                return self._send(chunk)
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
        return self._send(chunk)

    def _check_stop(self, size: int) -> None:
        if self.stop is not None and self.stop.is_set():
            raise PublishStopped(f"publishing stopped before a chunk of {size} transactions was sent")

    @property
    def partitions(self) -> int:
        """The partition count, stored or checked in Redis on first use."""
        return self._agree_partitions()

    def _agree_partitions(self) -> int:
        """Store or check the partition count in Redis on first use; return it."""
        if self._partitions is None:
            self._partitions = agree_count(self.client, self.keys, self.requested_partitions)
        return self._partitions

    def _send(self, chunk: list[Transaction]) -> list[str | None]:
        """Publish a chunk, one script call or pipeline per partition stream; keep the chunk's order in the reply."""
        if self.partitions == 1:
            return _entry_ids(self._send_to(self.keys.transactions, chunk))

        groups: dict[str, list[int]] = {}
        for index, transaction in enumerate(chunk):
            stream = partition_stream(self.keys, self.partitions, partition_of(transaction.user_id, self.partitions))
            groups.setdefault(stream, []).append(index)

        replies: list = [None] * len(chunk)
        for stream, indexes in groups.items():
            for index, reply in zip(indexes, self._send_to(stream, [chunk[i] for i in indexes])):
                replies[index] = reply
        return _entry_ids(replies)

    def _send_to(self, stream: str, chunk: list[Transaction]) -> list:
        # Bytes, so that neither rewardpilot.resp nor redis-py encodes them again.
        payloads = codec.transactions_json(chunk)
        if self.dedup_window_seconds:
            marker_prefix = self.keys.published_marker("").encode()  # a marker is this prefix and the transaction_id
            # rewardpilot.resp packs the command in a fraction of the time
            # redis-py takes to encode a thousand marker keys one by one.
            command = resp.pack([
                "EVALSHA", _PUBLISH_ONCE_SHA, len(chunk) + 1, stream,
                *[marker_prefix + transaction.transaction_id.encode() for transaction in chunk],
                self.dedup_window_seconds, ",".join(map(str, map(len, payloads))), b"".join(payloads),
            ])
            return self._evaluate(command)
        pipeline = self.client.pipeline(transaction=False)
        for payload in payloads:
            pipeline.xadd(stream, {codec.DATA: payload})
        return pipeline.execute()

    def _evaluate(self, packed: bytes) -> list:
        """Run a packed EVALSHA of the publish-once script, loading the script first if the server lacks it."""
        try:
            return resp.execute(self.client, packed)
        except redis.exceptions.NoScriptError:
            self.client.script_load(_PUBLISH_ONCE)
            return resp.execute(self.client, packed)

    def _apply_backpressure(self, size: int) -> None:
        """Check the backlog once per ``chunk_size`` transactions and wait while it is too large."""
        if self.max_backlog is None:
            return
        if self._unchecked and self._unchecked + size <= self.chunk_size:
            self._unchecked += size
            return
        self._unchecked = size
        # NOTE: with partitions, each partition stream may hold its share of
        # max_backlog, so one busy user's partition waits before the total is reached.
        share = -(-self.max_backlog // self.partitions)
        waited = False
        for partition in range(self.partitions):
            waited |= wait_for_backlog(
                self.client, partition_stream(self.keys, self.partitions, partition), self.group, share,
                poll_seconds=self.poll_seconds, max_wait_seconds=self.max_wait_seconds, on_wait=self.on_wait,
                stop=self.stop, fix=self._backlog_fix(),
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


def _whole_number(name: str, value: object, *, minimum: int, fix: str = "") -> int:
    """Return ``value`` as an int when it is a whole number of at least ``minimum``; raise ``InvalidOptionError``.

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
