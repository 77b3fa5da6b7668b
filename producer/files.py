"""Publishing a whole file: read, validate, record rejects, publish, summarise.

``publish_file`` is what ``rewardpilot publish FILE|-`` runs. Exit status
rule for the command line (``exit_status``): 0 when every row was published,
skipped as a non-purchase or found already published; 1 when any row was
rejected; 2 when the file could not be read at all (an ``InputError``).

When the producer has a ``stop`` event, setting it ends publishing at the
next chunk boundary: the chunks already sent stay published, the rest of the
file is not read, and the summary is marked ``stopped``.

Input from a pipe or terminal is published as it arrives: a partial chunk is
sent as soon as the pipe is empty, or once ``linger_seconds`` have
passed since the chunk before while data keeps coming. A regular file is
sent in full chunks only.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import os
import secrets
import stat
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, TextIO

import redis
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from producer.errors import InputError, InvalidOptionError, RowError
from producer.layouts import Layout
from producer.publisher import Producer, PublishStopped
from producer.readers import (
    Rejected, Row, Skipped, check_converter, check_user, input_stream, open_reader, resolve_layout, scan_date_order,
    sub_cent_warning, to_usd,
)
from producer.rejects import RejectsWriter
from rewardpilot.fx import CurrencyConverter
from rewardpilot.models import Transaction
from rewardpilot.streams import StreamKeys

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_INPUT_ERROR = 2

# The bar is redrawn at most a few times a second anyway, and updating it per
# row cost about 3% of publishing time (cProfile, 100,000 rows).
PROGRESS_EVERY_ROWS = 500
# Allocations between young-generation garbage collections while a file is
# published (Python's default is 700). See _collect_garbage_less_often.
GC_YOUNG_THRESHOLD = 50_000
# Seconds a thread may hold the GIL while another waits for it, while a file
# is published (Python's default is 0.005). See _hand_over_sooner.
SWITCH_INTERVAL_SECONDS = 0.0005
# A regular file up to this size whose rows run newest first (as most bank exports list them)
# is read whole and published oldest first, so that caps are used up in purchase order.
# NOTE: every row of such a file stays in memory until it is published. At an estimated 1 KB
# per row, 5 MB of CSV (some 50,000 rows) takes tens of MB.
REVERSE_LIMIT_BYTES = 5 * 1024 * 1024
# A row dated more than this before a row above it counts as out of time order.
OUT_OF_ORDER_GRACE = timedelta(days=1)
# Maximum seconds a row read from a pipe or terminal waits for more rows to
# join its chunk while input keeps arriving. A pause in the input sends it at once.
DEFAULT_LINGER_SECONDS = 0.2


@dataclass
class FileSummary:
    """What happened to the rows of one file."""

    source: str
    layout: str = ""
    rows: int = 0
    published: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: int = 0
    converted: int = 0
    unconverted: dict[str, int] = field(default_factory=dict)  # currency -> rows kept unconverted
    empty_lines: int = 0
    warnings: list[str] = field(default_factory=list)
    rejects_path: str | None = None
    first_rejects: list[str] = field(default_factory=list)
    future_dated: int = 0  # published purchases dated more than FUTURE_GRACE after the publish
    first_future_line: int | None = None
    past_dated: int = 0  # published purchases dated before PAST_LIMIT (1970-01-01 UTC)
    first_past_line: int | None = None
    stopped: bool = False  # the producer's stop event ended publishing before the end of the input
    unpublished: int = 0  # valid rows read but not published because publishing stopped
    # When stopped: no row starting after this line was published, and every
    # valid row starting on or before it was published or already published.
    # None for a file published oldest first, from its last line up.
    stopped_after_line: int | None = None
    oldest_first: bool = False  # the rows ran newest first and were published from the last line up
    out_of_order: int = 0  # published rows dated more than OUT_OF_ORDER_GRACE before a row published earlier
    first_out_of_order_line: int | None = None
    size_bytes: int | None = None  # the size of the input, when it is a regular file
    bytes_read: int = 0
    # The rows of the input, when it was read whole before publishing (a file of up to
    # REVERSE_LIMIT_BYTES, for the row-order check). None when the rows were read as published.
    total_rows: int | None = None


SHOWN_REJECTS = 10  # rejected rows listed in the summary; the rejects file has them all
# A purchase dated later than this after the publish is most likely a wrong date (a 9999-12-31
# placeholder, a two-digit year read in the wrong century). It is published, with a warning.
FUTURE_GRACE = timedelta(days=1)
# A purchase dated before the Unix epoch (compared in UTC) is most likely a wrong date too (a
# 1900-01-01 placeholder). It is published, with a warning. Dates before 1900 are rejected
# when the row is read (rewardpilot.models.EARLIEST_TIMESTAMP).
PAST_LIMIT = datetime(1970, 1, 1, tzinfo=timezone.utc)


def default_rejects_path(source: str) -> Path:
    """Return ``<input file name>.rejects.jsonl`` in the current directory, ``stdin.rejects.jsonl`` for stdin.

    The current directory, not the input's, because input often sits in a
    read-only or shared data folder.
    """
    if source in ("-", "<stdin>"):
        return Path("stdin.rejects.jsonl")
    return Path(f"{Path(source).name}.rejects.jsonl")


def unique_rejects_path(name: str) -> Path:
    """Return ``<name>-<UTC time>-<8 random hex digits>.rejects.jsonl`` in the current directory, for one publish alone."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(f"{name}-{stamp}-{secrets.token_hex(4)}.rejects.jsonl")


def publish_file(
    client: redis.Redis,
    keys: StreamKeys,
    source: str | Path | BinaryIO | TextIO,
    *,
    layout: Layout | str | Path | None = None,
    format: str | None = None,
    user: str | None = None,
    rejects_path: str | Path | None = None,
    progress: bool = True,
    producer: Producer | None = None,
    console: Console | None = None,
    converter: CurrencyConverter | None = None,
    linger_seconds: float = DEFAULT_LINGER_SECONDS,
) -> FileSummary:
    """Read ``source`` (a path, ``"-"`` for standard input, or a binary or text stream) and publish its purchases.

    Rejected rows, skipped non-purchases and transactions already published
    within the deduplication window go to the rejects file: ``rejects_path``,
    else ``default_rejects_path`` of the file's name, else for a stream
    without a name (an ``io.BytesIO``) a new ``unique_rejects_path``. A file
    left at that path by an earlier publish is deleted first, with a notice
    on ``console``, so no stale file remains when nothing is recorded.
    ``FileSummary.rejects_path`` names the file used.

    ``layout``, ``user`` and a text stream are taken as ``read_transactions``
    takes them: ``layout`` may name a preset or a layout file, and ``user``
    is the user_id given to bank exports, which name no user.
    ``converter`` converts non-USD amounts to USD; without one, a non-USD row
    is rejected. Raises ``InvalidOptionError`` for an argument of the wrong
    type or an empty ``user``, and ``InputError`` when the file cannot be
    read at all.

    Once ``producer.stop`` is set, reading ends at the next chunk or within
    ``PROGRESS_EVERY_ROWS`` rows, the rows read but not sent are counted as
    ``unpublished``, and the summary is returned with ``stopped`` set. While
    a pipe or terminal sends nothing, the stop is seen within
    ``IDLE_POLL_SECONDS`` (0.1 s).

    From a pipe or terminal, rows read are sent without waiting for a full
    chunk once the input pauses, or ``linger_seconds`` after the chunk before.
    """
    if (isinstance(linger_seconds, bool) or not isinstance(linger_seconds, (int, float))
            or not math.isfinite(linger_seconds) or linger_seconds < 0):
        raise InvalidOptionError(
            f"linger_seconds={linger_seconds!r} is invalid; give a finite number of seconds, 0 or more, "
            f"such as {DEFAULT_LINGER_SECONDS}"
        )
    source = input_stream(source)
    layout = resolve_layout(layout)
    check_user(user)
    converter = check_converter(converter)
    name = str(source) if isinstance(source, (str, Path)) else getattr(source, "name", None)
    if not isinstance(name, str) or not name:
        name = "stream"  # an io.BytesIO has no name, and os.fdopen names a stream by its descriptor number
        # Two uploads published at once must not share one rejects file, so a nameless stream gets its own.
        rejects_path = rejects_path or unique_rejects_path(name)
    producer = producer or Producer(client, keys)
    console = console or Console(stderr=True, emoji=False)
    summary = FileSummary(source=name)
    rejects = RejectsWriter(rejects_path or default_rejects_path(name))

    stream, total = _open(source)
    try:
        if _can_read_twice(stream):
            # A file in the reverse day and month order of its layout is stopped before anything is published.
            scan_date_order(stream, name=name, layout=layout, format=format, user=user)
        live_input = _LiveInput(producer.stop)
        try:
            reader = open_reader(stream, name=name, layout=layout, format=format, user=user,
                                 before_read=live_input)
        except _ReadingStopped:
            # Stopped while a pipe had not yet sent enough to tell its format.
            summary.layout = "unknown"
            summary.stopped = True
            summary.stopped_after_line = 0
            return summary
        with rejects, _collect_garbage_less_often(), _hand_over_sooner(), _progress(console, enabled=progress and total is not None) as bar:
            task = bar.add_task(name, total=total, rows=0)
            producer.on_wait = producer.on_wait or (lambda message: console.print(message))
            # The chunk is kept as two lists in place of its Row objects, so each
            # Row is freed at once. Fewer objects living for a whole chunk means
            # less work for the garbage collector.
            lines: list[int] = []
            transactions: list[Transaction] = []
            checks = _PublishedRowChecks(summary, future_after=datetime.now(timezone.utc) + FUTURE_GRACE)
            # The rounding warning must name a published row, which only the chunk results tell.
            reader.on_sub_cent = checks.note_sub_cent
            sender = _ChunkSender(producer, summary, rejects, checks)
            stop = producer.stop
            stopped_reading = False
            outcome = None

            def send_partial_chunk(ready: bool) -> None:
                nonlocal lines, transactions
                if not transactions:
                    if not ready:
                        # Counts the chunk in flight, and raises its error, while the input is quiet.
                        sender.finish()
                elif not ready or time.monotonic() - sender.last_sent >= linger_seconds:
                    sender.send(lines, transactions)
                    lines = []
                    transactions = []
                if sender.stopped:
                    raise _ReadingStopped

            live_input.send_partial_chunk = send_partial_chunk
            try:
                # The first outcome reads the header, so an input that cannot be read at all raises
                # InputError here and keeps the rejects file of an earlier publish.
                outcomes = iter(reader)
                first = next(outcomes, None)
                rejects.remove_earlier(lambda notice: console.print(notice, markup=False, highlight=False,
                                                                    soft_wrap=True))
                ordered = itertools.chain(() if first is None else (first,), outcomes)
                # A named pipe has a size of 0, and only a regular file is read whole here.
                if total and total <= REVERSE_LIMIT_BYTES and producer.dedup_window_seconds and _can_read_twice(stream):
                    listed = list(ordered)
                    summary.total_rows = len(listed)
                    ordered, summary.oldest_first = _oldest_first(listed)
                for outcome in ordered:
                    summary.rows += 1
                    if isinstance(outcome, Row) and outcome.transaction.currency != "USD":
                        outcome = _to_usd(converter, outcome, summary)
                        if isinstance(outcome, Rejected):
                            checks.forget_sub_cent(outcome.line)
                    if isinstance(outcome, Row):
                        lines.append(outcome.line)
                        transactions.append(outcome.transaction)
                        if len(transactions) >= producer.chunk_size:
                            sender.send(lines, transactions)
                            lines = []
                            transactions = []
                            if sender.stopped:
                                stopped_reading = True
                                break
                    elif isinstance(outcome, Rejected):
                        summary.rejected += 1
                        rejects.rejected(outcome)
                        if len(summary.first_rejects) < SHOWN_REJECTS:
                            summary.first_rejects.append(outcome.error.message)
                    elif isinstance(outcome, Skipped):
                        summary.skipped += 1
                        rejects.skipped(outcome)
                    if summary.rows % PROGRESS_EVERY_ROWS == 0:
                        bar.update(task, completed=reader.bytes_read, rows=summary.rows)
                        # Checked here too, so a file of rejected rows, which fills no chunk, stops as well.
                        if stop is not None and stop.is_set():
                            stopped_reading = True
                            break
                sender.send(lines, transactions)
                sender.finish()
            except _ReadingStopped:
                stopped_reading = True
                sender.send(lines, transactions)
                sender.finish()
            finally:
                sender.shutdown()
                # A publish that stopped early leaves the reader unfinished. Closing it here, on the thread
                # that read it, deletes its temporary id database now instead of whenever the garbage
                # collector finds it.
                outcomes.close()
            if stopped_reading or sender.stopped:
                summary.stopped = True
                if summary.oldest_first:
                    summary.stopped_after_line = None  # the rows published are the last lines of the file
                elif sender.first_unpublished_line is not None:
                    summary.stopped_after_line = sender.first_unpublished_line - 1
                else:
                    # The last row read, which was not held back, or 0 when a pipe was stopped before its first row.
                    summary.stopped_after_line = outcome.line if outcome is not None else 0
            bar.update(task, completed=reader.bytes_read, rows=summary.rows)
    finally:
        if stream is not source and stream is not sys.stdin.buffer:
            stream.close()

    summary.layout = reader.layout.name if reader.layout else reader.format
    summary.size_bytes = total or None  # a named pipe reports a size of 0
    summary.bytes_read = reader.bytes_read
    summary.empty_lines = reader.empty_lines
    summary.warnings = list(reader.warnings)
    if checks.first_sub_cent is not None:
        line, amount = checks.first_sub_cent
        summary.warnings.append(sub_cent_warning(reader.position_text(line), amount))
    if summary.future_dated:
        summary.warnings.append(
            f"{summary.future_dated} row(s) are dated more than a day after now (first on line "
            f"{summary.first_future_line}) and were published as they are; check the date column and its format"
        )
    if summary.past_dated:
        summary.warnings.append(
            f"{summary.past_dated} row(s) are dated before 1970-01-01 (first on line "
            f"{summary.first_past_line}) and were published as they are; check the date column and its format"
        )
    if summary.oldest_first:
        summary.warnings.append(
            "the rows run newest first, as bank exports list them, so they were published oldest first "
            "(from the last line up) for caps to be used up in purchase order"
        )
    if summary.out_of_order:
        summary.warnings.append(
            f"{summary.out_of_order} row(s) are dated more than a day before a row published before them (first "
            f"on line {summary.first_out_of_order_line}); consumers apply caps in publish order, so sort the "
            "file by date for caps to be used up in purchase order"
        )
    for currency, count in sorted(summary.unconverted.items()):
        summary.warnings.append(
            f"{count} {currency} row(s) were published unconverted, with the {currency} amount taken as USD "
            "(--unconverted-currency keep)"
        )
    summary.rejects_path = str(rejects.path) if rejects.count else None
    return summary


def _oldest_first(outcomes: list) -> tuple[list, bool]:
    """Return the outcomes with the rows oldest first, and whether that reversed them.

    The rows are reversed when at least nine in ten of the steps between
    consecutive rows of different dates go back in time. Rejected and
    skipped rows keep their place at the start, in file order, so the
    rejects file still lists them by line.
    """
    rows = [outcome for outcome in outcomes if isinstance(outcome, Row)]
    earlier = later = 0
    for above, below in zip(rows, rows[1:]):
        if below.transaction.timestamp < above.transaction.timestamp:
            earlier += 1
        elif below.transaction.timestamp > above.transaction.timestamp:
            later += 1
    if earlier == 0 or earlier < 9 * later:
        return outcomes, False
    others = [outcome for outcome in outcomes if not isinstance(outcome, Row)]
    return others + rows[::-1], True


@contextlib.contextmanager
def _collect_garbage_less_often() -> Iterator[None]:
    """Raise the young generation's garbage collection threshold to ``GC_YOUNG_THRESHOLD`` allocations, then restore it.

    Each row leaves a Transaction and its field set alive until its chunk is
    published. At Python's default of 700 allocations the cyclic collector
    ran about 370 times on 100,000 rows, and it promoted the transactions in
    flight to the older generations, which it then walked too. Reference
    counting frees the rows' objects either way. On the 100,000-row bench
    file this saved about 0.6 us of CPU per row (median of 6 paired runs on
    2 CPUs).

    NOTE: the threshold is process-wide, so other threads collect less often
    too while a file is published, and a change another thread makes to it
    meanwhile is undone at the end.
    """
    thresholds = gc.get_threshold()
    if thresholds[0] < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


@contextlib.contextmanager
def _hand_over_sooner() -> Iterator[None]:
    """Lower the interpreter's thread switch interval to ``SWITCH_INTERVAL_SECONDS``, then restore it.

    The main thread reads rows while ``_ChunkSender``'s thread waits for the
    server's reply to the chunk before. When that reply arrives, the sender
    thread needs the GIL to take it and return, and at Python's default
    interval the main thread kept it for up to 5 ms. The server sat idle
    meanwhile, and the next chunk waited. On 200,000 bench rows, publishing
    took 11.8 us of wall time per row for 9.2 us of CPU at 5 ms, and 9.7 us
    for 9.6 us of CPU at 0.5 ms (3 paired runs on 2 CPUs).

    NOTE: like the garbage collection threshold, the interval is process-wide.
    """
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, SWITCH_INTERVAL_SECONDS))
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def _to_usd(converter: CurrencyConverter, row: Row, summary: FileSummary) -> Row | Rejected:
    """Convert the row's amount to USD with ``to_usd``, counting converted and unconverted rows in ``summary``."""
    outcome = to_usd(converter, row)
    if outcome is row:
        if row.transaction.original_currency is not None:
            # Converted by its reader, such as with an OFX transaction's own CURRATE.
            summary.converted += 1
        elif row.transaction.currency != "USD":
            currency = row.transaction.currency
            summary.unconverted[currency] = summary.unconverted.get(currency, 0) + 1
    elif isinstance(outcome, Row):
        summary.converted += 1
    return outcome


def _open(source: str | Path | BinaryIO) -> tuple[BinaryIO, int | None]:
    """Return the binary stream and its size in bytes when known (a regular file)."""
    if isinstance(source, (str, Path)):
        if str(source) == "-":
            return sys.stdin.buffer, None
        try:
            stream = open(source, "rb")
        except OSError as error:
            raise InputError(f"cannot open {str(source)!r}: {error.strerror}") from None
        return stream, os.fstat(stream.fileno()).st_size
    return source, None


def _can_read_twice(stream: BinaryIO) -> bool:
    """Return whether ``stream`` can be read in a first pass and then again: a regular file or an in-memory buffer.

    A pipe, such as standard input fed by another program, cannot be.
    """
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (AttributeError, OSError):  # no file descriptor, as for io.BytesIO
        seekable = getattr(stream, "seekable", None)
        return bool(seekable and seekable())


class _ReadingStopped(Exception):
    """Raised by ``_LiveInput`` inside the reader to end reading a pipe or terminal once publishing must stop."""


class _LiveInput:
    """The ``before_read`` hook of a pipe or terminal input: ends reading on a stop, and sends a partial chunk.

    ``send_partial_chunk`` is set once the chunk lists exist. Before that,
    while the first bytes are read to tell the format, only the stop is checked.
    """

    def __init__(self, stop: threading.Event | None) -> None:
        self.stop = stop
        self.send_partial_chunk: Callable[[bool], None] | None = None

    def __call__(self, ready: bool) -> None:
        if self.stop is not None and self.stop.is_set():
            raise _ReadingStopped
        if self.send_partial_chunk is not None:
            self.send_partial_chunk(ready)


class _PublishedRowChecks:
    """The checks that count or name published rows only: dates far off or out of order, and rounded amounts.

    ``_ChunkSender`` calls ``observe`` with each chunk's results, in publish
    order, so a duplicate, a row rejected after it was read and a row left
    unpublished by a stop are neither counted nor named.
    """

    def __init__(self, summary: FileSummary, *, future_after: datetime) -> None:
        self.summary = summary
        self.future_after = future_after
        self.latest: datetime | None = None  # the latest timestamp published so far
        # Line -> amount as read, of rows with an amount finer than a cent that are
        # read but not yet published. Empty once the first such row is published.
        self._sub_cent: dict[int, Decimal] = {}
        self.first_sub_cent: tuple[int, Decimal] | None = None  # (line, amount as read) of the first one published

    def note_sub_cent(self, line: int, amount: Decimal) -> None:
        """Record that the row read from ``line`` had ``amount``, which was rounded to whole cents."""
        if self.first_sub_cent is None:
            self._sub_cent[line] = amount

    def forget_sub_cent(self, line: int) -> None:
        """Drop the row read from ``line``, which was rejected after it was read."""
        self._sub_cent.pop(line, None)

    def observe(self, lines: list[int], transactions: list[Transaction], ids: list[str | None]) -> None:
        """Count the published rows of one chunk; an id of None marks a duplicate, which was not published."""
        summary = self.summary
        pending = self._sub_cent
        for line, transaction, entry_id in zip(lines, transactions, ids):
            amount = pending.pop(line, None) if pending else None
            if entry_id is None:
                continue
            if amount is not None:
                self.first_sub_cent = (line, amount)
                pending.clear()
            timestamp = transaction.timestamp
            if timestamp > self.future_after:
                summary.future_dated += 1
                summary.first_future_line = summary.first_future_line or line
            elif timestamp < PAST_LIMIT:
                summary.past_dated += 1
                summary.first_past_line = summary.first_past_line or line
            if self.latest is None or timestamp > self.latest:
                self.latest = timestamp
            elif timestamp < self.latest - OUT_OF_ORDER_GRACE:
                summary.out_of_order += 1
                summary.first_out_of_order_line = summary.first_out_of_order_line or line


class _ChunkSender:
    """Publish chunks on one worker thread, so reading the next chunk overlaps the server's work.

    At most one chunk is in flight: ``send`` first waits for the previous one
    and counts its results, so chunks reach the stream in file order. A
    publishing error is raised from the ``send`` or ``close`` after it.
    Once the producer's ``stop`` is set, ``send`` counts its chunk as
    unpublished instead of sending it, and so does ``_collect`` for a chunk
    that the producer stopped before sending.

    NOTE: a duplicate of chunk N reaches the rejects file after the rejected
    rows read while chunk N was in flight, so that file is not in line order.
    """

    def __init__(self, producer: Producer, summary: FileSummary, rejects: RejectsWriter,
                 checks: _PublishedRowChecks) -> None:
        self.producer = producer
        self.summary = summary
        self.rejects = rejects
        self.checks = checks
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rewardpilot-publish")
        self._in_flight: tuple[list[int], list[Transaction], Future] | None = None
        self.stopped = False
        self.first_unpublished_line: int | None = None
        self.last_sent = time.monotonic()  # when the latest chunk was handed to the worker thread

    def send(self, lines: list[int], transactions: list[Transaction]) -> None:
        """Wait for the chunk in flight, then start publishing ``transactions``, read from ``lines``."""
        self._collect()
        if not transactions:
            return
        stop = self.producer.stop
        if self.stopped or (stop is not None and stop.is_set()):
            self._leave_unpublished(lines, transactions)
            return
        future = self._executor.submit(self.producer.publish_chunk, transactions)
        self._in_flight = (lines, transactions, future)
        self.last_sent = time.monotonic()

    def finish(self) -> None:
        """Wait for the chunk in flight and count its results."""
        self._collect()

    def shutdown(self) -> None:
        """Stop the worker thread after the chunk in flight, whose results are then not counted."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _collect(self) -> None:
        if self._in_flight is None:
            return
        lines, transactions, future = self._in_flight
        self._in_flight = None
        try:
            ids = future.result()
        except PublishStopped:
            self._leave_unpublished(lines, transactions)
            return
        duplicates = ids.count(None)
        self.summary.published += len(ids) - duplicates
        self.checks.observe(lines, transactions, ids)
        if not duplicates:
            return
        for line, transaction, entry_id in zip(lines, transactions, ids):
            if entry_id is None:
                self.summary.duplicates += 1
                self.rejects.duplicate(line, transaction.transaction_id, self.producer.dedup_window_seconds)

    def _leave_unpublished(self, lines: list[int], transactions: list[Transaction]) -> None:
        """Count a chunk that publishing stopped before sending. Chunks come in file order, so the first is earliest."""
        self.stopped = True
        self.summary.unpublished += len(transactions)
        if self.first_unpublished_line is None:
            self.first_unpublished_line = lines[0]


class RowRateColumn(ProgressColumn):
    """Rows read so far and rows per second since the task started."""

    def render(self, task: Task) -> Text:
        rows = task.fields.get("rows", 0)
        elapsed = task.elapsed or 0.0
        rate = f"{rows / elapsed:,.0f} rows/s" if elapsed > 0 else "- rows/s"
        return Text(f"{rows:,} rows, {rate}", style="progress.data.speed")


def _progress(console: Console, *, enabled: bool) -> Progress:
    """Return a bar of bytes read, with rows per second and the time left estimated from bytes.

    The bar is off when ``console`` is not interactive (a file or a pipe), where
    it would show nothing but an empty line, which rich 15 prints on stop.
    """
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        RowRateColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled or not console.is_interactive,
        transient=True,
    )


def exit_status(summary: FileSummary) -> int:
    """Return the command-line exit status: 1 when any row was rejected, else 0."""
    return EXIT_REJECTED if summary.rejected else EXIT_OK


def format_summary(summary: FileSummary) -> Table:
    """Return a rich table of the counts, for the command line to print."""
    table = Table(title=f"{summary.source} ({summary.layout} layout)", show_header=False)
    table.add_column("outcome")
    # fold: a value longer than the column, such as the rejects file path, wraps in place of being cut.
    table.add_column("rows", justify="right", overflow="fold")
    table.add_row("rows read", str(summary.rows))
    table.add_row("published", str(summary.published))
    table.add_row("already published (duplicates)", str(summary.duplicates))
    table.add_row("skipped (not purchases: refunds, credits, transfers, declined)", str(summary.skipped))
    table.add_row("rejected", str(summary.rejected))
    if summary.converted:
        table.add_row("converted to USD", str(summary.converted))
    table.add_row("empty lines", str(summary.empty_lines))
    if summary.stopped:
        table.add_row("read but not published (stopped)", str(summary.unpublished))
    if summary.rejects_path:
        table.add_row("rejects file", summary.rejects_path)
    for warning in summary.warnings:
        table.add_row("warning", warning)
    return table
