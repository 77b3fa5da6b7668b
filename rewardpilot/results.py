"""Reading the results stream: follow it live, or read a range of it.

To resume a subscription after a restart, follow the stream with
``subscribe_entries``: each ``ResultEntry`` carries the result's own entry
id on the results stream, and ``start=`` that id yields only the results
written after it. docs/results.md lists the fields of a result entry.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import re
import time
from typing import AsyncGenerator, Callable, Iterator, NamedTuple

import redis
import redis.asyncio as aioredis
from pydantic import ValidationError

from rewardpilot.codec import DATA, decode_result
from rewardpilot.logs import get_logger
from rewardpilot.models import Recommendation

READ_CHUNK = 1000
# Backoff between reconnection attempts, in seconds, the last one repeated (as the consumers do).
RECONNECT_BACKOFF_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
# Time a blocking read leaves between the end of its BLOCK and the client's socket timeout, for
# the reply to arrive. Without it a quiet stream's read times out (see the NOTE in rewardpilot.connection).
BLOCK_MARGIN_MS = 1000

# A stream entry id: <milliseconds>-<sequence>, or <milliseconds> alone. Both parts are
# 64-bit unsigned numbers (XADD reference, https://redis.io/commands/xadd/).
_ENTRY_ID = re.compile(r"^(\d+)(?:-(\d+))?$")
_MAX_ID_PART = 2**64 - 1
# The number of validation errors that the message of an InvalidResultEntryError quotes. It counts the rest.
QUOTED_ERRORS = 3
# The end of the message of an InvalidResultEntryError, as _decode_entry takes it.
_SUBSCRIBE_FIX = "read on after it with start='{result_id}', or pass on_invalid to skip such entries"
_RANGE_FIX = "read on after it with start='({result_id}'"

log = get_logger("results")


class ResultsConnectionLost(ConnectionError):
    """The connection to Redis dropped and did not come back within the reconnect timeout."""

    def __init__(self, seconds: float, error: Exception):
        super().__init__(f"could not reconnect within {seconds:g} s ({str(error).rstrip('.')})")
        self.seconds = seconds
        self.error = error


class InvalidResultsOptionError(ValueError):
    """An option of ``subscribe``, ``subscribe_entries`` or ``read_results`` is invalid. The message names it."""


class InvalidStreamIdError(InvalidResultsOptionError):
    """A ``start`` or ``end`` that is not a stream entry id in a form the read accepts.

    ``option`` is the parameter's name and ``value`` what was passed.
    """

    def __init__(self, option: str, value: object, accepted: str):
        self.option = option
        self.value = value
        super().__init__(f"{option}={value!r} is not a valid stream entry id; use {accepted}")


class InvalidResultEntryError(ValueError):
    """A results-stream entry that does not decode to a ``Recommendation``.

    ``result_id`` is the entry's id on ``stream`` and ``reason`` describes
    what is wrong with it, in one line. ``error`` is the exception that decoding
    raised, or None when the entry has no ``data`` field. The entry stays on
    the stream.
    """

    def __init__(self, stream: str, result_id: str, reason: str, error: Exception | None, fix: str):
        self.stream = stream
        self.result_id = result_id
        self.reason = reason
        self.error = error
        super().__init__(f"results entry {result_id} of {stream} is not a valid result: {reason}; {fix}")


class ResultEntry(NamedTuple):
    """One result with its entry id on the results stream.

    ``result_id`` is the id to pass as ``start`` to resume after this result.
    It is not ``recommendation.entry_id``, which is the transaction's entry id
    on the transactions stream.
    """

    result_id: str
    recommendation: Recommendation


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _user_of(fields: dict) -> str:
    value = fields.get("user_id", fields.get(b"user_id", b""))
    return _text(value)


def _is_entry_id(text: str) -> bool:
    match = _ENTRY_ID.match(text)
    return match is not None and all(int(part) <= _MAX_ID_PART for part in match.groups() if part is not None)


def _id_text(option: str, value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if not isinstance(value, str):
        raise TypeError(f"{option} must be a str stream entry id such as '1700000000000-0', "
                        f"got {type(value).__name__} {value!r}")
    return value


SUBSCRIBE_START_FORMS = ("'$' (only new results), '0' (from the first result), an entry id "
                         "<milliseconds>-<sequence> such as '1700000000000-0' to read after that entry, or "
                         "<milliseconds> alone to read after every entry of that millisecond")


def check_subscribe_start(start: str | bytes) -> str:
    """Return ``start`` as the id XREAD reads after, else raise InvalidStreamIdError naming the accepted forms.

    A millisecond alone, other than "0", becomes that millisecond's last
    possible id, ``<milliseconds>-18446744073709551615``, so the read starts
    after every entry of that millisecond. XREAD itself would read it as
    ``<milliseconds>-0`` and return the rest of the millisecond.
    """
    text = _id_text("start", start)
    if text == "$":
        return text
    match = _ENTRY_ID.match(text)
    if match is None or not _is_entry_id(text):
        raise InvalidStreamIdError("start", start, SUBSCRIBE_START_FORMS)
    milliseconds, sequence = match.groups()
    if sequence is None and text != "0":
        return f"{milliseconds}-{_MAX_ID_PART}"
    return text


def check_range_bound(option: str, value: str | bytes) -> str:
    """Return a ``read_results`` bound as text when XRANGE accepts it, else raise InvalidStreamIdError."""
    text = _id_text(option, value)
    open_end = "-" if option == "start" else "+"
    exclusive = text[1:] if text.startswith("(") else text
    if text != open_end and not _is_entry_id(exclusive):
        raise InvalidStreamIdError(
            option, value,
            f"'{open_end}' for the open end, or an entry id <milliseconds>-<sequence> such as '1700000000000-0' "
            "(or <milliseconds> alone), prefixed with '(' to leave that entry out",
        )
    return text


def _describe_decode_error(error: Exception) -> str:
    """Return a decoding error in one line: each pydantic error's field and message, without the input."""
    if not isinstance(error, ValidationError):
        return str(error)
    problems = error.errors(include_url=False, include_context=False, include_input=False)
    parts = []
    for problem in problems[:QUOTED_ERRORS]:
        field = ".".join(str(part) for part in problem["loc"])
        parts.append(f"{field}: {problem['msg']}" if field else problem["msg"])
    if len(problems) > QUOTED_ERRORS:
        parts.append(f"and {len(problems) - QUOTED_ERRORS} more errors")
    return "; ".join(parts)


def _decode_entry(stream: str, result_id: str, fields: dict, fix: str) -> Recommendation:
    """Decode one results-stream entry, or raise InvalidResultEntryError when it is not a result.

    ``fix`` ends the error's message. It is a ``str.format`` template, and
    ``{result_id}`` in it becomes the entry's id.
    """
    if DATA not in fields and DATA.encode() not in fields:
        raise InvalidResultEntryError(stream, result_id, f"it has no {DATA!r} field", None,
                                      fix.format(result_id=result_id))
    try:
        return decode_result(fields)
    except ValidationError as error:
        raise InvalidResultEntryError(stream, result_id, _describe_decode_error(error), error,
                                      fix.format(result_id=result_id)) from error


def _check_seconds(option: str, seconds: float | None) -> None:
    if seconds is None:
        return
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{option} must be a number of seconds or None, got {type(seconds).__name__} {seconds!r}")
    if math.isnan(seconds) or seconds < 0:
        raise InvalidResultsOptionError(f"{option}={seconds!r} is invalid; give seconds of 0 or more, or None")


def socket_timeout_of(client: aioredis.Redis) -> float | None:
    """Return the client's socket timeout in seconds, or None when it has none or it cannot be found.

    A client opened without ``socket_timeout`` gets its connection class's
    default, which is 5 s in redis-py 8.2 (``DEFAULT_SOCKET_TIMEOUT`` in
    ``redis/_defaults.py``).
    """
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return None
    if "socket_timeout" in pool.connection_kwargs:
        return pool.connection_kwargs["socket_timeout"]
    for cls in pool.connection_class.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        parameter = inspect.signature(init).parameters.get("socket_timeout")
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return None


def read_block_ms(client: aioredis.Redis, block_ms: int) -> int:
    """Return the XREAD BLOCK time to use: ``block_ms``, capped at BLOCK_MARGIN_MS below the socket timeout.

    Raises InvalidResultsOptionError for a block time below 1 ms, because
    BLOCK 0 waits forever and the idle timeout would never end the read, and
    for a socket timeout too short to block at all.
    """
    if isinstance(block_ms, bool) or not isinstance(block_ms, int):
        raise TypeError(f"block_ms must be an int number of milliseconds, got {type(block_ms).__name__} {block_ms!r}")
    if block_ms < 1:
        raise InvalidResultsOptionError(f"block_ms={block_ms} is invalid; give 1 or more milliseconds")

    timeout = socket_timeout_of(client)
    if timeout is None:
        return block_ms
    longest = int(timeout * 1000) - BLOCK_MARGIN_MS
    if longest < 1:
        raise InvalidResultsOptionError(
            f"the client's socket timeout of {timeout:g} s is too short to block on the stream: it must be more "
            f"than {BLOCK_MARGIN_MS / 1000:g} s. Open the client with connect_async(url, block_ms={block_ms}), "
            "which sets a socket timeout that outlasts the block"
        )
    return min(block_ms, longest)


def subscribe_entries(
    client: aioredis.Redis,
    stream: str,
    *,
    start: str = "$",
    user: str | None = None,
    block_ms: int = 5000,
    idle_timeout_seconds: float | None = None,
    reconnect_timeout_seconds: float | None = None,
    stop: asyncio.Event | None = None,
    on_invalid: Callable[[InvalidResultEntryError], object] | None = None,
) -> AsyncGenerator[ResultEntry, None]:
    """Yield each result as a ``ResultEntry`` with its results-stream id, as results arrive.

    ``start`` is ``$`` (only results written from now on), ``0`` (from the
    first result), or a results-stream entry id: reading starts after it, so
    the ``result_id`` of the last result handled resumes without repeats. A
    millisecond alone, such as ``1700000000000``, starts after every result
    of that millisecond. ``user`` keeps only that user's results.

    ``block_ms`` is the longest BLOCK of each XREAD. When the client's socket
    timeout is not BLOCK_MARGIN_MS longer, each read blocks for the socket
    timeout minus that margin instead, so a quiet stream never times the read
    out. With ``idle_timeout_seconds``, the generator returns once that many
    seconds of reading have passed without a result to yield, and each read
    blocks for no longer than the time left. Results of other users (with
    ``user``) and invalid entries do not reset that time. Time spent
    reconnecting, or in the caller between two results, does not count.
    Without it, the generator runs until the caller stops iterating.

    An entry that does not decode to a ``Recommendation`` (damaged JSON, or
    no ``data`` field) raises ``InvalidResultEntryError``, which ends the
    generator. Its ``result_id`` passed as ``start`` to a new call reads on
    after that entry. With ``on_invalid``, such an entry is passed to
    ``on_invalid`` as an ``InvalidResultEntryError`` and skipped, and the
    generator goes on with the next entry. An entry filtered out by ``user``
    is not decoded, so it never counts as invalid.

    With ``reconnect_timeout_seconds``, a dropped connection is retried with
    backoff and reading goes on after the last entry read, and
    ``ResultsConnectionLost`` is raised once Redis has not replied for that
    long. Without it, connection errors propagate.

    Once ``stop`` is set, the generator yields nothing more and returns
    before its next read, or at once while it waits to reconnect. A read in
    progress is not interrupted: it ends within its block time. So a
    signal handler can end a subscription by setting ``stop``, without
    cancelling a task inside a Redis command.

    The options are checked before the first read, when this function is
    called. It raises InvalidStreamIdError for a bad ``start``,
    InvalidResultsOptionError for another bad value and TypeError for a
    value of the wrong type.
    """
    start = check_subscribe_start(start)
    block = read_block_ms(client, block_ms)
    _check_seconds("idle_timeout_seconds", idle_timeout_seconds)
    _check_seconds("reconnect_timeout_seconds", reconnect_timeout_seconds)
    if stop is not None and not isinstance(stop, asyncio.Event):
        raise TypeError(f"stop must be an asyncio.Event or None, got {type(stop).__name__} {stop!r}")
    if on_invalid is not None and not callable(on_invalid):
        raise TypeError(f"on_invalid must be a callable or None, got {type(on_invalid).__name__} {on_invalid!r}")
    return _follow(client, stream, start, user, block, idle_timeout_seconds, reconnect_timeout_seconds,
                   stop if stop is not None else asyncio.Event(), on_invalid)


def _block_time(block_ms: int, idle_timeout_seconds: float | None, idle: float) -> int:
    """Return the BLOCK of the next read: ``block_ms``, or less when the idle timeout comes sooner, but at least 1 ms.

    BLOCK 0 would wait forever, so the last read before the idle timeout blocks for 1 ms.
    """
    if idle_timeout_seconds is None or math.isinf(idle_timeout_seconds):
        return block_ms
    remaining_ms = math.ceil((idle_timeout_seconds - idle) * 1000)
    return max(1, min(block_ms, remaining_ms))


async def _follow(client: aioredis.Redis, stream: str, start: str, user: str | None, block_ms: int,
                  idle_timeout_seconds: float | None, reconnect_timeout_seconds: float | None,
                  stop: asyncio.Event,
                  on_invalid: Callable[[InvalidResultEntryError], object] | None) -> AsyncGenerator[ResultEntry, None]:
    last_id = start
    # Seconds spent reading, and sorting out what was read, since the last result yielded.
    idle = 0.0
    failures = 0
    down_since: float | None = None
    while not stop.is_set():
        read_started = time.monotonic()
        try:
            if last_id == "$":
                # Pin "$" to the newest id, so that reading after a reconnection keeps the results written meanwhile.
                last_id = await _newest_id(client, stream)
            reply = await client.xread({stream: last_id}, count=READ_CHUNK,
                                       block=_block_time(block_ms, idle_timeout_seconds, idle))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if reconnect_timeout_seconds is None:
                raise
            now = time.monotonic()
            down_since = now if down_since is None else down_since
            if now - down_since >= reconnect_timeout_seconds:
                raise ResultsConnectionLost(reconnect_timeout_seconds, exc) from exc
            delay = RECONNECT_BACKOFF_SECONDS[min(failures, len(RECONNECT_BACKOFF_SECONDS) - 1)]
            failures += 1
            if failures == 1 or failures % 10 == 0:
                log.warning("Redis unreachable; reconnecting", stream=stream, error=str(exc), attempts=failures,
                            retry_in_seconds=delay)
            await _sleep_unless_stopped(stop, delay)
            continue

        if failures:
            log.info("reconnected to Redis", stream=stream, attempts=failures)
        failures = 0
        down_since = None
        yielded = False
        for entry_id, fields in reply[0][1] if reply else ():
            if stop.is_set():
                return
            last_id = _text(entry_id)
            if user is not None and _user_of(fields) != user:
                continue
            try:
                recommendation = _decode_entry(stream, last_id, fields, _SUBSCRIBE_FIX)
            except InvalidResultEntryError as error:
                if on_invalid is None:
                    raise
                on_invalid(error)
                continue
            yielded = True
            idle = 0.0
            yield ResultEntry(last_id, recommendation)
        if not yielded:
            idle += time.monotonic() - read_started
            if idle_timeout_seconds is not None and idle >= idle_timeout_seconds:
                return


async def _sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less when ``stop`` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


async def _newest_id(client: aioredis.Redis, stream: str) -> str:
    """Return the stream's last entry id, or "0-0" when it is empty or missing."""
    newest = await client.xrevrange(stream, count=1)
    return _text(newest[0][0]) if newest else "0-0"


def subscribe(
    client: aioredis.Redis,
    stream: str,
    *,
    start: str = "$",
    user: str | None = None,
    block_ms: int = 5000,
    idle_timeout_seconds: float | None = None,
    reconnect_timeout_seconds: float | None = None,
    stop: asyncio.Event | None = None,
    on_invalid: Callable[[InvalidResultEntryError], object] | None = None,
) -> AsyncGenerator[Recommendation, None]:
    """Yield results as they arrive, like ``subscribe_entries`` but without their results-stream ids.

    See ``subscribe_entries`` for the options and errors: an entry that is
    not a valid result raises ``InvalidResultEntryError`` unless
    ``on_invalid`` is given. To resume after a restart, use
    ``subscribe_entries``, because ``Recommendation.entry_id`` is the
    transaction's entry id, not the result's.
    """
    entries = subscribe_entries(client, stream, start=start, user=user, block_ms=block_ms,
                                idle_timeout_seconds=idle_timeout_seconds,
                                reconnect_timeout_seconds=reconnect_timeout_seconds, stop=stop,
                                on_invalid=on_invalid)
    return _recommendations(entries)


async def _recommendations(entries: AsyncGenerator[ResultEntry, None]) -> AsyncGenerator[Recommendation, None]:
    try:
        async for entry in entries:
            yield entry.recommendation
    finally:
        await entries.aclose()


def read_results(client: redis.Redis, stream: str, *, start: str = "-", end: str = "+",
                 user: str | None = None) -> Iterator[Recommendation]:
    """Yield every result in a range of the stream, in order, in chunks of XRANGE.

    ``start`` and ``end`` are XRANGE bounds: ``-`` and ``+`` for the open
    ends, or entry ids, with a leading ``(`` to leave that entry out. They
    are checked when this function is called: InvalidStreamIdError names a
    bad one. An entry that is not a valid result raises
    ``InvalidResultEntryError`` with its id, once the results before it
    were yielded.
    """
    start = check_range_bound("start", start)
    end = check_range_bound("end", end)
    return _read_range(client, stream, start, end, user)


def _read_range(client: redis.Redis, stream: str, start: str, end: str, user: str | None) -> Iterator[Recommendation]:
    cursor = start
    while True:
        entries = client.xrange(stream, min=cursor, max=end, count=READ_CHUNK)
        if not entries:
            return
        for entry_id, fields in entries:
            if user is None or _user_of(fields) == user:
                yield _decode_entry(stream, _text(entry_id), fields, _RANGE_FIX)
        last = _text(entries[-1][0])
        cursor = "(" + last
        if len(entries) < READ_CHUNK:
            return
