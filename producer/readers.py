"""Streaming readers of CSV and JSON lines that yield one outcome per row.

Each row becomes a ``Row`` (a valid purchase), a ``Rejected`` (invalid, with
a ``RowError`` naming the line, column, value and fix) or a ``Skipped`` (valid
but not a purchase: a refund, a credit, a declined authorization). Readers
raise ``InputError`` for a file that cannot be read at all (no header, an
unknown layout) and no other exception for bad input.

Rows are decoded one at a time, so bytes that are not UTF-8 reject only the
row they are in, and a stray CSV quote rejects only the line it is on. Memory
stays bounded: a row is at most ``MAX_RECORD_BYTES``
and transaction_ids are remembered in a ``DuplicateIndex``.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import itertools
import json
import os
import reprlib
import shlex
import sys
from collections import deque
from dataclasses import dataclass
from datetime import timezone
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, TextIO


from producer.date_order import DateOrderCheck
from producer.duplicates import DuplicateIndex
from producer.errors import InputError, InvalidOptionError, RowError
from producer.layouts import (
    DEFAULT_TIMESTAMP_FORMATS, DOCUMENTED, FIELDS, Layout, Skip, detect_layout, json_kind, load_layout,
    normalize_column, other_separator_message, validate_transaction,
)
# After producer.layouts, which the bank presets build on.
from producer.bank_layouts import DEFAULT_USER
from producer.lines import MAX_LINE_BYTES, LineSplitter, PhysicalLine, TextAsUtf8, not_text_message
from producer.values import DateReading, day_month_order, format_amount, parse_amount, parse_timestamp
from rewardpilot.canonical import canonical_transaction, is_encodable
from rewardpilot.fx import ConversionError, CurrencyConverter, MissingRateError
from rewardpilot.models import MAX_ID_LENGTH, Transaction
from rewardpilot.money import to_cents
from rewardpilot.logs import get_logger

log = get_logger(__name__)

MAX_RECORD_BYTES = MAX_LINE_BYTES
NOT_UTF8_FIX = "save the file as UTF-8"
UNCLOSED_QUOTE_FIX = 'close the quote on this line, or write a quote that is part of the text as two quotes ("")'


@dataclass(frozen=True, init=False)
class Row:
    """A valid purchase read from ``line``.

    ``raw`` is the row's text as read, kept only when the transaction is in
    another currency than USD: ``to_usd`` writes it in a ``Rejected`` when
    the amount cannot be converted. It is None for a USD row.
    """

    line: int
    transaction: Transaction
    raw: str | None = dataclasses.field(default=None, repr=False, compare=False)

    def __init__(self, line: int, transaction: Transaction, raw: str | None = None) -> None:
        # The generated __init__ of a frozen dataclass sets each field with
        # object.__setattr__, and one is built per row. Writing the instance
        # dict takes about 40% less time (timeit, CPython 3.11).
        fields = self.__dict__
        fields["line"] = line
        fields["transaction"] = transaction
        if raw is not None and transaction.currency != "USD":
            fields["raw"] = raw


@dataclass(frozen=True)
class Rejected:
    """An invalid row, with the error that names what is wrong and the raw text."""

    error: RowError
    raw: str

    @property
    def line(self) -> int:
        return self.error.line


@dataclass(frozen=True)
class Skipped:
    """A valid row that is not a purchase, so it is recorded and not published."""

    line: int
    reason: str
    raw: str
    transaction_id: str | None = None


Outcome = Row | Rejected | Skipped


class _RecordTooLarge(Exception):
    """Raised inside the CSV line source when one row grows past the size limit."""


class _CsvLineSource:
    """Feed decoded physical lines to ``csv.reader`` and remember the lines each record consumed.

    Invalid UTF-8 is decoded with ``surrogateescape`` so the CSV parser keeps
    going. The reader then finds the escaped bytes and rejects that row.
    ``record_lines`` keeps the record's physical lines, so the lines after the
    first can be read again when the record is rejected. A record is cut off
    once it passes ``max_record_bytes``, so it keeps at most that many bytes
    plus one line.
    """

    def __init__(self, lines: Iterable[PhysicalLine], max_record_bytes: int) -> None:
        self.lines = lines
        self.max_record_bytes = max_record_bytes
        self.record_lines: list[PhysicalLine] = []
        self.record_parts: list[str] = []
        self.record_bytes = 0
        self.at_end = False  # the lines ran out during this record
        self._first_line: PhysicalLine | None = None

    def begin_record(self, first_line: PhysicalLine) -> None:
        """Start a record whose first line, ``first_line``, the caller has already taken."""
        self.record_lines = []
        self.record_parts = []
        self.record_bytes = 0
        self.at_end = False
        self._first_line = first_line

    def __iter__(self) -> _CsvLineSource:
        return self

    def __next__(self) -> str:
        if self._first_line is not None:
            line = self._first_line
            self._first_line = None
        else:
            try:
                line = next(self.lines)
            except StopIteration:
                self.at_end = True
                raise
        number, content, ending, too_long = line
        self.record_lines.append(line)
        data = content + ending
        self.record_bytes += len(data)
        text = data.decode("utf-8", "surrogateescape")
        self.record_parts.append(text)
        if too_long or self.record_bytes > self.max_record_bytes:
            raise _RecordTooLarge
        return text

    @property
    def record_start(self) -> int:
        return self.record_lines[0].number

    @property
    def record_end(self) -> int:
        return self.record_lines[-1].number

    @property
    def raw(self) -> str:
        return "".join(self.record_parts).rstrip("\r\n")

    @property
    def first_raw(self) -> str:
        """The text of the record's first line, without its line end."""
        return self.record_parts[0].rstrip("\r\n")


def _pop_each(lines: deque[PhysicalLine]) -> Iterator[PhysicalLine]:
    """Remove and yield the lines of ``lines`` from the left until it is empty."""
    while lines:
        yield lines.popleft()


def _not_utf8_error(text: str, line: int, column: str | None) -> RowError | None:
    """Return an error for the first byte that was not UTF-8, or ``None`` if there is none."""
    for offset, char in enumerate(text):
        if "\udc80" <= char <= "\udcff":
            byte = bytes([ord(char) - 0xDC00])
            return RowError(
                f"byte {byte!r} at character {offset + 1} is not valid UTF-8",
                line=line, column=column, value=_printable(text), fix=NOT_UTF8_FIX,
            )
    return None


def _is_header(fields: list[str], header: list[str]) -> bool:
    """Return whether a line's fields are ``header``, compared as column names are."""
    return [normalize_column(field) for field in fields] == [normalize_column(name) for name in header]


def _printable(text: str) -> str:
    """Return text with escaped bytes shown as ``\\xNN``, and other lone surrogates as ``\\udNNN``, for JSON."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        # A lone surrogate outside the escaped-byte range, such as one a JSON "\\ud800" escape gives.
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def sub_cent_warning(where: str, amount: Decimal) -> str:
    """Build the warning that amounts finer than a cent are rounded, naming the first such row and its amount."""
    return (f"amounts with more than two decimal places are rounded half up to whole cents "
            f"(first on {where}: {amount} becomes {to_cents(amount)})")


class SubCentNotes:
    """The rounding warning of a reader: once per input, naming the first row whose amount was finer than a cent.

    A reader calls ``note_sub_cent`` for each row it yields as a ``Row``, so
    the warning never names a row the reader rejected. When ``on_sub_cent``
    is set, every such row goes to it and the reader gives no warning of its
    own. ``publish_file`` sets it, because it rejects rows after reading them
    (a currency without a rate) and drops duplicates, so only its chunk
    results show which row was published first.
    """

    position_name = "line"  # what ``Row.line`` counts in this format
    on_sub_cent: Callable[[int, Decimal], None] | None = None
    warnings: list[str]
    _sub_cent_warned = False

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        # Debug only: the file summary shows each warning, and API callers read ``warnings``.
        log.debug("input warning", warning=message)

    def note_sub_cent(self, line: int, amount: Decimal) -> None:
        """Record that the row yielded from ``line`` had ``amount``, which was rounded to whole cents."""
        if self.on_sub_cent is not None:
            self.on_sub_cent(line, amount)
            return
        if self._sub_cent_warned:
            return
        self._sub_cent_warned = True
        self.warn(sub_cent_warning(self.position_text(line), amount))

    def position_text(self, line: int) -> str:
        """Name the row read from ``line`` in a message, such as "line 12"."""
        return f"{self.position_name} {line}"


class _LineReader(SubCentNotes):
    """Shared state of the line-based readers: the lines, duplicates, warnings and counts."""

    def __init__(self, stream: BinaryIO, *, max_record_bytes: int, duplicates: DuplicateIndex | None) -> None:
        self.lines = stream if isinstance(stream, LineSplitter) else LineSplitter(stream, max_line_bytes=max_record_bytes)
        self.max_record_bytes = max_record_bytes
        self.duplicates = duplicates or DuplicateIndex()
        self.layout: Layout | None = None
        self.warnings: list[str] = []
        self.empty_lines = 0
        self._warned_zone = False

    @property
    def bytes_read(self) -> int:
        return self.lines.bytes_read


class CsvReader(_LineReader):
    """Read a CSV file of transactions and yield an ``Outcome`` per row.

    The first non-empty line is the header. ``layout`` is used when given,
    otherwise it is detected from the header. After iteration starts,
    ``layout``, ``warnings``, ``empty_lines`` and ``bytes_read`` describe the
    file. Empty lines are counted and not reported as rejects. A file whose
    lines are all empty raises ``InputError``, and a header with no rows
    below it gives a warning. ``name`` is the file name that messages use.
    """

    format = "csv"

    def __init__(
        self,
        stream: BinaryIO,
        *,
        layout: Layout | None = None,
        user: str | None = None,
        max_record_bytes: int = MAX_RECORD_BYTES,
        duplicates: DuplicateIndex | None = None,
        name: str = "",
    ) -> None:
        super().__init__(stream, max_record_bytes=max_record_bytes, duplicates=duplicates)
        self.layout = layout
        self.user = user
        self.name = name
        # The field count of a row, once the header is bound. _records checks it on records that span lines.
        self._row_width: int | None = None
        # Set once the header is bound, for a layout with numeric day-and-month date formats such as MM/DD/YYYY.
        self.date_order: DateOrderCheck | None = None
        self._dates_only = False  # check_date_order reads the dates and converts no row

    def __iter__(self) -> Iterator[Outcome]:
        try:
            yield from self._read()
        finally:
            self.duplicates.close()

    def _records(self) -> Iterator[tuple[int, list[str] | None, str, RowError | None]]:
        """Yield (line, fields, raw text, error) for each CSV record, empty ones included.

        A line without a quote is one record whose fields ``csv.reader``
        would split at each comma, so such a line is split with ``str.split``,
        which takes a fraction of the time. Lines with a quote, empty lines
        and lines over a size limit go through ``csv.reader``, and so do the
        further lines of a quoted field that spans lines.

        A record spans lines only when its first line ends inside a quoted
        field. When such a record fails (it grows past the size limit, is not
        valid CSV, or has a field count other than the header's), the quote
        on its first line is taken to be stray. Only that line is rejected,
        and reading resumes at the record's second line, so the rows after a
        stray quote are read as usual.

        NOTE: two stray quotes can still join lines into one row that passes,
        when the second quote closes the field in a place that keeps the
        header's field count. That row is read whole, with a line end inside
        a field, and the lines between the quotes are not rows of their own.
        """
        source = _CsvLineSource(self.lines, self.max_record_bytes)
        reader = csv.reader(source, strict=True)
        # A line of at most field_size_limit bytes has no field longer than
        # field_size_limit characters, so csv.reader would not reject it.
        split_limit = min(self.max_record_bytes, csv.field_size_limit())
        # Lines of rejected records that are read again. Clean files never
        # fill it, so the loop below runs on the LineSplitter itself.
        replay: deque[PhysicalLine] = deque()
        lines: Iterable[PhysicalLine] = self.lines
        while True:
            for line in lines:
                content = line.content
                if content and not line.too_long and len(content) + len(line.ending) <= split_limit:
                    # Decode before looking for a quote, because ``in`` on bytes
                    # first tries the operand as an integer and raises internally.
                    raw = content.decode("utf-8", "surrogateescape")
                    if '"' not in raw:
                        yield line.number, raw.split(","), raw, None
                        continue

                source.begin_record(line)
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except _RecordTooLarge:
                    error = self._too_large_error(source)
                    raw = source.raw[:200]  # LineSplitter has already cut a line over the limit
                except csv.Error as csv_error:
                    error = self._csv_error(source, csv_error)
                    raw = source.raw
                else:
                    spans_lines = len(source.record_lines) > 1
                    if not spans_lines or self._row_width is None or len(fields) == self._row_width:
                        yield source.record_start, fields, source.raw, None
                        continue
                    error = self._joined_width_error(source, fields)

                # A fresh csv.reader, because one whose source raised cannot go on.
                reader = csv.reader(source, strict=True)
                if len(source.record_lines) == 1:
                    yield source.record_start, None, raw, error
                    continue

                replay.extendleft(reversed(source.record_lines[1:]))
                lines = itertools.chain(_pop_each(replay), self.lines)
                source.lines = lines
                yield source.record_start, None, source.first_raw, error
                break
            else:
                return

    def _too_large_error(self, source: _CsvLineSource) -> RowError:
        if len(source.record_lines) == 1:
            return RowError(
                f"the row is longer than the limit of {self.max_record_bytes} bytes",
                line=source.record_start, value=_printable(source.raw[:80]) + "...", fix="shorten the row",
            )
        return RowError(
            f"the quote opened on this line is never closed, so by line {source.record_end} "
            f"the row is longer than the limit of {self.max_record_bytes} bytes",
            line=source.record_start, value=_printable(source.first_raw[:200]), fix=UNCLOSED_QUOTE_FIX,
        )

    def _csv_error(self, source: _CsvLineSource, error: csv.Error) -> RowError:
        # csv.reader reads another line only inside a quoted field, so
        # running out of lines means the quote never closed.
        if source.at_end:
            where = f" on line {source.record_end}" if len(source.record_lines) > 1 else ""
            reason = f"the quote opened on this line is never closed before the file ends{where}"
        elif len(source.record_lines) == 1:
            return RowError(
                f"the row is not valid CSV ({error})",
                line=source.record_start, value=_printable(source.raw[:200]),
                fix='write a quote inside a quoted field as two quotes ("")',
            )
        else:
            reason = (f"the quoted field that opens on this line is malformed, because it runs on "
                      f"to line {source.record_end} and the CSV is not valid there ({error})")
        return RowError(reason, line=source.record_start, value=_printable(source.first_raw[:200]),
                        fix=UNCLOSED_QUOTE_FIX)

    def _joined_width_error(self, source: _CsvLineSource, fields: list[str]) -> RowError:
        return RowError(
            f"the quoted field that opens on this line runs on to line {source.record_end}, and the row "
            f"it makes has {len(fields)} fields but the header has {self._row_width}",
            line=source.record_start, value=_printable(source.first_raw[:200]), fix=UNCLOSED_QUOTE_FIX,
        )

    def _read(self) -> Iterator[Outcome]:
        records = self._records()
        bound = None
        # A layout that names the columns of a file without a header row is bound before the first line.
        named = self.layout is not None and bool(self.layout.header)
        if named:
            bound = self._bind_named_columns()

        header_line: int | None = None
        has_rows = False
        only_blank = True  # every empty line so far is blank, not a line of commas
        for line, fields, raw, error in records:
            if error is None and not "".join(fields).strip():  # every field empty or whitespace
                self.empty_lines += 1
                if only_blank and raw.strip():
                    only_blank = False
                continue
            if error is not None and bound is None:
                raise InputError(f"the header on line {line} cannot be read: {error.reason}; {error.fix}")
            if bound is None:
                bound = self._bind_header(fields, line, raw)
                header_line = line
                continue
            if named and error is None and _is_header(fields, self.layout.header):
                header_line = line
                continue
            named = False  # only the first line can be the header
            has_rows = True
            if error is not None:
                yield Rejected(error, _printable(raw))
                continue
            yield self._convert(bound, fields, line, raw)

        if header_line is None and not has_rows:
            raise InputError(self._no_header_message(only_blank))
        if not has_rows:
            self.warn(
                f"the file has a header on line {header_line} but no rows below it, so it contains no "
                "transactions. Check the date range of the export, or export the file again"
            )
        if self.date_order is not None:
            warning = self.date_order.swapped_dates_warning()
            if warning is not None:
                self.warn(warning)

    def _no_header_message(self, only_blank: bool) -> str:
        """Build the error for a file in which every line is empty: blank, or only empty fields."""
        label = _input_label(self.name)
        lines = "its only line" if self.empty_lines == 1 else f"each of its {self.empty_lines} lines"
        if not only_blank and self.layout is not None and self.layout.header:
            # The layout names the columns, so the file needs rows, not a header.
            return (f"{label} has no rows, because {lines} has only empty fields, such as a line of commas. "
                    f"{_empty_input_fix(self.name)}")
        if not only_blank:
            return (
                f"{label} has no header line, because {lines} has only empty fields, such as a line of commas. "
                f"Put the header on the first line, such as the documented header {','.join(DOCUMENTED.expected_header)}"
            )
        if self.bytes_read == 0:
            detail = " (0 bytes)"
        elif self.empty_lines:
            detail = f": {lines} is blank"
        else:
            detail = ": it contains only a UTF-8 byte-order mark"
        return f"{label} is empty{detail}. {_empty_input_fix(self.name)}"

    def _apply_user(self) -> None:
        """Make ``user`` the user_id of a layout that names no user; warn when the file has its own."""
        if "user_id" in self.layout.columns:
            self.warn(
                f"--user {self.user!r} is ignored because the {self.layout.name} layout "
                f"reads user_id from the column {self.layout.columns['user_id']!r}"
            )
            return
        self.layout = self.layout.with_user(self.user)

    def _bind_named_columns(self):
        """Bind the layout to its own ``header``, for a file without a header row."""
        if self.user is not None:
            self._apply_user()
        bound = self.layout.bind(self.layout.header)
        self._row_width = bound.width
        self._watch_date_order()
        return bound

    def _bind_header(self, fields: list[str], line: int, raw: str):
        bad = _not_utf8_error(raw, line, None)
        if bad is not None:
            raise InputError(f"the header on line {line} is not valid UTF-8; {NOT_UTF8_FIX}")
        header = [field.strip() for field in fields]
        try:
            if self.layout is None:
                self.layout = detect_layout(header)
            if self.user is not None:
                self._apply_user()
            bound = self.layout.bind(header)
        except InputError:
            separator_message = other_separator_message(raw, len(fields), self.layout)
            if separator_message is None:
                raise
            raise InputError(separator_message) from None
        self._row_width = bound.width
        if bound.extra_columns:
            names = ", ".join(repr(name) for name in bound.extra_columns)
            if len(bound.extra_columns) == 1:
                self.warn(f"column {names} is not used by the {self.layout.name} layout and is ignored")
            else:
                self.warn(f"columns {names} are not used by the {self.layout.name} layout and are ignored")
        self._watch_date_order()
        return bound

    def _watch_date_order(self) -> None:
        """Start a ``DateOrderCheck`` when the layout reads dates with a numeric day and month, such as MM/DD/YYYY."""
        order = day_month_order(self.layout.timestamp_formats)
        if order is None:
            return
        self.date_order = DateOrderCheck(
            order, reader_name=f"the {self.layout.name} layout", input_label=_input_label(self.name),
        )
        # The instance attribute hides the method, so rows of other layouts,
        # such as the documented one with ISO 8601 dates, pay nothing for the check.
        self._convert = self._read_date_only if self._dates_only else self._convert_checking_date

    def check_date_order(self) -> None:
        """Read the dates of the rows, and raise ``InputError`` when they prove the reverse day and month order.

        Proof is a date that is real only in the reverse order (25/03/2026 for
        MM/DD/YYYY) with no date that is real only in the layout's order.
        Reading stops once no later row can change the outcome. This is a
        first pass before publishing, so no row is converted, and the reader
        cannot be iterated again.
        """
        self._dates_only = True
        rows = iter(self)
        try:
            for _ in rows:
                if self.date_order is None or self.date_order.settled:
                    break
        finally:
            rows.close()
        if self.date_order is not None and self.date_order.proves_other_order:
            raise InputError(self.date_order.swapped_order_message())

    def _read_date_only(self, bound, fields: list[str], line: int, raw: str) -> None:
        """Record what a row's date shows about the day and month order, for ``check_date_order``."""
        self.date_order.observe(line, bound.timestamp_text(fields, line, raw))
        if not self.date_order.applies:
            del self._convert

    def _convert_checking_date(self, bound, fields: list[str], line: int, raw: str) -> Outcome:
        """Convert a row as ``_convert`` does, and record what its date shows about the day and month order."""
        check = self.date_order
        reading = check.observe(line, bound.timestamp_text(fields, line, raw))
        if not check.applies:
            del self._convert  # the dates are in another format, such as ISO 8601
        outcome = CsvReader._convert(self, bound, fields, line, raw)
        if reading is DateReading.EITHER_ORDER and isinstance(outcome, Row):
            check.count_purchase(line)
        return outcome

    def _convert(self, bound, fields: list[str], line: int, raw: str) -> Outcome:
        if not raw.isascii():  # escaped bytes that were not UTF-8 are never ASCII
            bad = _first_not_utf8(bound, fields, line)
            if bad is not None:
                return Rejected(bad, _printable(raw))

        try:
            result, had_zone = bound.convert(fields, line, raw)
        except RowError as error:
            return Rejected(error, raw)

        if isinstance(result, Skip):
            return Skipped(line, result.reason, raw, result.transaction_id)
        if not had_zone and not self._warned_zone:
            self._warned_zone = True
            self.warn(f"timestamps have no time zone (first on line {line}); they are read as {self.layout.timezone}, "
                      "and a date without a time of day as noon")
        earlier = self.duplicates.add(result.transaction_id, line)
        if earlier is not None:
            return _duplicate(result, line, earlier, raw, bound._source_name("transaction_id"))
        if bound.row_sub_cent is not None:
            self.note_sub_cent(*bound.row_sub_cent)
        return Row(line, result, raw)


def _is_file_name(name: str) -> bool:
    """Return whether ``name`` names a file, not standard input ("-" or Python's "<stdin>") or a nameless stream."""
    return bool(name) and name != "-" and not name.startswith("<")


def _input_label(name: str) -> str:
    return f"the file {name!r}" if _is_file_name(name) else "the input"


def _empty_input_fix(name: str) -> str:
    if _is_file_name(name):
        return "Check the file path, or export the file again"
    return "Check that the data was sent, or export the file again"


def _first_not_utf8(bound, fields: list[str], line: int) -> RowError | None:
    """Return an error for the first field holding a byte that was not UTF-8, naming its column."""
    columns = {position: name for name, position in reversed(bound.positions.items())}
    for index, field in enumerate(fields):
        if field.isascii():
            continue
        bad = _not_utf8_error(field, line, columns.get(index, str(index + 1)))
        if bad is not None:
            return bad
    return None


def _duplicate(transaction: Transaction, line: int, earlier: int, raw: str, column: str) -> Rejected:
    """Return the ``Rejected`` for a transaction whose transaction_id was used on line ``earlier``.

    The callers check for a duplicate themselves, because a call per row
    for the common case costs more than the check.
    """
    return Rejected(
        RowError(
            f"transaction_id {transaction.transaction_id!r} was already used on line {earlier}",
            line=line, column=column, value=transaction.transaction_id,
            fix="give each transaction its own transaction_id", transaction_id=transaction.transaction_id,
        ),
        raw,
    )


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def json_lines_order_fix(layout: str) -> str:
    """Return the fix for JSON lines whose dates are in the reverse day and month order of ``layout``.

    JSON lines take no layout file, so the fix is the same for every format.
    It is ISO 8601, whose order is fixed. ``layout`` is accepted so this can
    stand in for ``day_month_order_fix``.
    """
    return ("write the timestamps in ISO 8601, year first, such as 2026-03-25 or 2026-03-25T12:30:00Z, "
            "because JSON lines have no setting for the day and month order")


class JsonLinesReader(_LineReader):
    """Read JSON lines (one transaction object per line) and yield an ``Outcome`` per line.

    Keys are the ``Transaction`` field names; unknown keys are ignored with one
    warning. ``amount_usd`` may be a number or a string as in CSV, and numbers
    are read as ``Decimal`` so no float rounding happens. An input whose
    lines are all blank gives a warning. ``name`` is the file name that
    messages use.

    Timestamps may be MM/DD/YYYY as well as ISO 8601, so ``date_order``
    checks their day and month order as ``CsvReader`` does for a layout with
    such formats. ``check_date_order`` runs before publishing, and a file
    that mixes both orders gets a warning at the end.
    """

    format = "jsonl"

    def __init__(
        self,
        stream: BinaryIO,
        *,
        max_record_bytes: int = MAX_RECORD_BYTES,
        duplicates: DuplicateIndex | None = None,
        name: str = "",
    ) -> None:
        super().__init__(stream, max_record_bytes=max_record_bytes, duplicates=duplicates)
        self._unknown_keys: set[str] = set()
        self.name = name
        self.date_order = DateOrderCheck(
            day_month_order(DEFAULT_TIMESTAMP_FORMATS), reader_name="the JSON lines reader",
            input_label=_input_label(name), order_fix=json_lines_order_fix,
        )

    def __iter__(self) -> Iterator[Outcome]:
        try:
            has_rows = False
            for line in self.lines:
                outcome = self._read_line(line)
                if outcome is not None:
                    has_rows = True
                    yield outcome
            if not has_rows:
                self.warn(f"{_input_label(self.name)} is empty, so it contains no transactions. "
                          f"{_empty_input_fix(self.name)}")
            warning = self.date_order.swapped_dates_warning()
            if warning is not None:
                self.warn(warning)
        finally:
            self.duplicates.close()

    def check_date_order(self) -> None:
        """Read the timestamps of the lines, and raise ``InputError`` when they prove the reverse day and month order.

        The proof is the same as for ``CsvReader.check_date_order``. Lines
        that are not JSON objects with a string timestamp are passed over,
        because reading them later rejects them. Reading stops once no later line can
        change the outcome. This is a first pass before publishing, so no line
        is converted, and the reader cannot be iterated again.
        """
        check = self.date_order
        try:
            for line in self.lines:
                if check.settled:
                    break
                stamp = _json_timestamp_text(line)
                if stamp is not None:
                    check.observe(line.number, stamp)
        finally:
            self.duplicates.close()
        if check.proves_other_order:
            raise InputError(check.swapped_order_message())

    def _read_line(self, line: PhysicalLine) -> Outcome | None:
        raw = line.content.decode("utf-8", "backslashreplace")
        if line.too_long:
            return Rejected(RowError(
                f"the line is longer than the limit of {self.max_record_bytes} bytes",
                line=line.number, value=raw[:80] + "...", fix="shorten it",
            ), raw[:200])
        if not line.content.strip():
            self.empty_lines += 1
            return None

        try:
            text = line.content.decode("utf-8")
        except UnicodeDecodeError as error:
            return Rejected(RowError(
                f"byte {line.content[error.start:error.start + 1]!r} at byte {error.start + 1} is not valid UTF-8",
                line=line.number, value=raw, fix=NOT_UTF8_FIX,
            ), raw)

        try:
            data = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as error:
            return Rejected(self._json_error(line, text, error), raw)
        if not isinstance(data, dict):
            return Rejected(RowError(
                f"the line is a JSON {json_kind(data)}, not an object",
                line=line.number, value=raw[:200], fix='write one object per line, like {"transaction_id": "t1", ...}',
            ), raw)

        try:
            return self._convert(data, line.number, raw)
        except RowError as error:
            if isinstance(data.get("transaction_id"), str):
                error.transaction_id = data["transaction_id"]
            return Rejected(error, raw)

    def _json_error(self, line: PhysicalLine, text: str, error: Exception) -> RowError:
        if isinstance(error, json.JSONDecodeError) and not line.ending and error.pos >= len(text.rstrip()):
            return RowError(
                "the last line is incomplete JSON, so the file looks truncated",
                line=line.number, value=text[:200], fix="send the rest of the file, or remove the partial line",
            )
        if isinstance(error, RecursionError):
            reason = "the JSON is nested too deeply"
        else:
            reason = f"the line is not valid JSON ({error})"
        return RowError(reason, line=line.number, value=text[:200], fix="write one JSON object per line")

    def _convert(self, data: dict, line: int, raw: str) -> Outcome:
        """Convert a line's object as ``_convert_object`` does, and record what its date shows about the order."""
        check = self.date_order
        if not check.applies:  # the first date was ISO 8601
            return self._convert_object(data, line, raw)
        stamp = data.get("timestamp")
        reading = check.observe(line, stamp) if isinstance(stamp, str) else None
        outcome = self._convert_object(data, line, raw)
        if reading is DateReading.EITHER_ORDER and isinstance(outcome, Row):
            check.count_purchase(line)
        return outcome

    def _convert_object(self, data: dict, line: int, raw: str) -> Outcome:
        unknown = set(data) - set(FIELDS) - self._unknown_keys
        if unknown:
            self._unknown_keys |= unknown
            self.warn(f"keys {sorted(unknown)} (first on line {line}) are not transaction fields and are ignored")

        for key, value in data.items():
            if isinstance(value, str) and not is_encodable(value):
                raise RowError("the text holds an unpaired surrogate escape", line=line, column=key,
                               value=_printable(value), fix="write valid Unicode text")

        values = {key: value for key, value in data.items() if key in FIELDS}
        transaction_id = values.get("transaction_id") if isinstance(values.get("transaction_id"), str) else None

        if "amount_usd" not in values:
            raise _missing_key_error("amount_usd", data, line)
        amount = _json_amount(values["amount_usd"], line)
        if amount <= 0:
            kind = "zero amount" if amount == 0 else f"refund or credit of {format_amount(-amount)}"
            return Skipped(line, f"{kind}, not a purchase; recorded, not recommended", raw, transaction_id)
        values["amount_usd"] = amount

        if "timestamp" not in values:
            raise _missing_key_error("timestamp", data, line)
        stamp = values["timestamp"]
        if not isinstance(stamp, str):
            raise RowError(
                f"timestamp is a JSON {json_kind(stamp)}, not a string",
                line=line, column="timestamp", value=stamp, fix='write it as an ISO 8601 string like "2024-05-01T12:30:00Z"',
            )
        try:
            values["timestamp"], had_zone = parse_timestamp(
                stamp, formats=DEFAULT_TIMESTAMP_FORMATS, zone=timezone.utc, order_fix=json_lines_order_fix,
            )
        except ValueError as error:
            raise RowError.from_value_error(error, line=line, column="timestamp", value=stamp) from None
        if not had_zone and not self._warned_zone:
            self._warned_zone = True
            self.warn(f"timestamps have no time zone (first on line {line}); they are read as UTC, "
                      "and a date without a time of day as noon UTC")

        transaction = canonical_transaction(values)
        if transaction is None:  # not in canonical form: validate in full, with error messages
            transaction = validate_transaction(values, line, lambda field: field,
                                               lambda field: _missing_key_error(field, data, line))
        earlier = self.duplicates.add(transaction.transaction_id, line)
        if earlier is not None:
            return _duplicate(transaction, line, earlier, raw, "transaction_id")
        # Validation rounds the amount to whole cents, so a different amount
        # means the line had more than two decimal places.
        if transaction.amount_usd != amount:
            self.note_sub_cent(line, amount)
        return Row(line, transaction, raw)


def _json_timestamp_text(line: PhysicalLine) -> str | None:
    """Return the string timestamp of a line that is a JSON object, or None for any other line."""
    if line.too_long or not line.content.strip():
        return None
    try:
        data = json.loads(line.content.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(data, dict):
        return None
    stamp = data.get("timestamp")
    return stamp if isinstance(stamp, str) else None


# difflib ratio at or above which a key that is not a transaction field counts
# as a misspelling of a missing key. It is looser than MISSPELLING_RATIO for
# header columns, because the only candidates are the keys of one object that
# no field reads. It pairs 'amount' with 'amount_usd' (0.75) and 'userid' with
# 'user_id' (0.92).
KEY_MISSPELLING_RATIO = 0.6

# How to add each key that a JSON lines object must have.
_MISSING_KEY_FIXES = {
    "transaction_id": 'add it, like "transaction_id": "tx-1001"',
    "user_id": 'add it, like "user_id": "user-1001"',
    "merchant": 'add it, like "merchant": "Whole Foods Market"',
    "amount_usd": 'add it, like "amount_usd": 12.50',
    "timestamp": 'add it as an ISO 8601 string, like "timestamp": "2024-05-01T12:30:00Z"',
}


def _missing_key_error(field: str, data: dict, line: int) -> RowError:
    """Build the error for a key that a line's object lacks, naming a key of the object that may be its misspelling."""
    unknown = {key.casefold(): key for key in data if key not in FIELDS}
    close = difflib.get_close_matches(field, list(unknown), n=1, cutoff=KEY_MISSPELLING_RATIO)
    if close:
        fix = f"the row has {unknown[close[0]]!r}, did you mean {field!r}? Rename the key"
    else:
        fix = _MISSING_KEY_FIXES.get(field, "add it")
        if unknown:
            names = " and ".join(repr(key) for key in sorted(unknown.values()))
            verb = "is not a transaction field" if len(unknown) == 1 else "are not transaction fields"
            fix += f". The row has {names}, which {verb}"
    return RowError(f"{field} is missing", line=line, column=field, value=None, fix=fix)


def _json_amount(value: object, line: int) -> Decimal:
    """Return a JSON amount as a Decimal: a number, or a string such as "$12.50"."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
        raise RowError(f"amount_usd is a JSON {json_kind(value)}, not a number", line=line, column="amount_usd",
                       value=value, fix="write it like 12.50")
    if isinstance(value, str):
        try:
            return parse_amount(value)
        except ValueError as error:
            raise RowError.from_value_error(error, line=line, column="amount_usd", value=value) from None
    amount = Decimal(value)
    if not amount.is_finite():
        raise RowError("amount_usd is not a finite number", line=line, column="amount_usd", value=value)
    return amount


JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
HEAD_BYTES = 4096  # how many first bytes ``open_reader`` reads to tell the formats apart
FORMATS = ("csv", "jsonl", "ofx", "plaid")


def _detect_format(head: bytes, name: str) -> str:
    """Return "ofx", "plaid", "jsonl" or "csv" from the file name and the first bytes.

    OFX is known by its suffix (.ofx, .qfx, .qbo), an ``OFXHEADER`` line or an
    ``<OFX>`` element in the first ``HEAD_BYTES``. A Plaid response is a JSON
    object whose first bytes name an ``added`` or ``transactions`` array and
    whose first line is not a whole object on its own (JSON lines). Otherwise the input is JSON lines
    when its first line is a complete JSON value on its own, when its suffix
    is a JSON one (JSON lines may start with a bad line), or when it starts
    with ``[`` or ``{``. ``open_reader`` then rejects a JSON array
    (``json_array_message``) and a JSON object spread over several lines
    (``json_object_message``).
    """
    from producer.ofx import OFX_SUFFIXES, looks_like_ofx
    from producer.plaid import looks_like_plaid

    suffix = Path(name).suffix.lower()
    # A head longer than HEAD_BYTES contains a long JSON first line (read_head),
    # whose text may mention <OFX> without being an OFX document.
    if suffix in OFX_SUFFIXES or looks_like_ofx(head[:HEAD_BYTES]):
        return "ofx"

    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    first_line = text.split(b"\n", 1)[0].strip()
    try:
        first = json.loads(first_line)
    except (ValueError, RecursionError):
        first = None
        if looks_like_plaid(head):
            return "plaid"
        if suffix in JSON_SUFFIXES or text.startswith((b"[", b"{")):
            return "jsonl"
        return "csv"
    if isinstance(first, dict) and any(key in first for key in ("added", "transactions")):
        return "plaid"
    return "jsonl"


def _parses_as(text: bytes, kind: type) -> bool:
    """Return whether ``text`` is one complete JSON value of type ``kind`` (dict or list)."""
    try:
        return isinstance(json.loads(text), kind)
    except (ValueError, RecursionError):
        return False


def json_array_message(head: bytes, name: str, *, whole: bool) -> str | None:
    """Build the error for an input that is a JSON array, or return None when it is not one.

    ``head`` is the first bytes of the input, and ``whole`` is True when they
    are all of it. An input is a JSON array when it starts with ``[`` and
    parses as an array as a whole. It also is one when it is not JSON lines:
    its first line is not a complete value followed by more lines, and its
    second non-blank line is not a complete JSON object. So a pretty-printed array is caught
    on its opening ``[`` line, and JSON lines whose first line is a bad line
    starting with ``[`` are still read line by line.
    """
    text = head.removeprefix(b"\xef\xbb\xbf").strip(b" \t\r\n")
    if not text.startswith(b"["):
        return None

    lines = [line.strip() for line in text.splitlines() if line.strip()]
    is_array = whole and _parses_as(text, list)
    if not is_array and _parses_as(lines[0], list):
        # A first line that is a whole array is the whole file, or one bad line of JSON lines.
        is_array = len(lines) == 1
    elif not is_array:
        is_array = len(lines) < 2 or not _parses_as(lines[1], dict)
    if not is_array:
        return None

    label = _input_label(name)
    if _is_file_name(name):
        path = Path(name)
        target = path.with_suffix(".jsonl")
        if target == path:
            target = path.with_name(f"{path.stem}-lines.jsonl")
        command = f"jq -c '.[]' {shlex.quote(name)} > {shlex.quote(str(target))}"
    else:
        command = "jq -c '.[]' FILE > FILE.jsonl"
    return (
        f"{label} is a JSON array, not JSON lines, so nothing was published. "
        "Write one transaction object per line instead, for example with "
        f"{command}, and publish that file"
    )


def json_object_message(head: bytes, name: str, *, whole: bool) -> str | None:
    """Build the error for an input that is one JSON object spread over several lines, or return None.

    ``head`` and ``whole`` are as for ``json_array_message``, and the same
    rule separates such a document from JSON lines whose first line is bad.
    The input starts with ``{`` and its first line ends in ``head`` but is
    not a complete value. Then it either parses as an object as a whole, or
    its second non-blank line is not a complete JSON object. A Plaid
    response never gets here, because ``_detect_format`` reads it as Plaid.
    A first line that does not end in ``head`` (``read_head`` reads on to
    the record size limit) is no document spread over lines: the JSON lines
    reader rejects that line as too long and reads the lines after it.
    """
    text = head.removeprefix(b"\xef\xbb\xbf").strip(b" \t\r\n")
    if not text.startswith(b"{"):
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if _parses_as(lines[0], dict):
        return None  # a whole object on the first line is a line of JSON lines
    if not whole and _first_json_line_cut(head):
        return None
    document = None
    if whole:
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            pass
    if not isinstance(document, dict) and len(lines) >= 2 and _parses_as(lines[1], dict):
        return None

    label = _input_label(name)
    keys = ""
    if isinstance(document, dict) and document:
        first_keys = ", ".join(repr(key) for key in list(document)[:5])
        keys = f" (its keys are {first_keys}{', ...' if len(document) > 5 else ''})"
    arrays = [key for key, value in document.items() if isinstance(value, list)] if isinstance(document, dict) else []
    source = shlex.quote(name) if _is_file_name(name) else "FILE"
    if len(arrays) == 1 and arrays[0].isidentifier():
        command = f"jq -c '.{arrays[0]}[]' {source} > transactions.jsonl"
    else:
        command = f"jq -c '.KEY[]' {source} > transactions.jsonl, where KEY names the array of transactions"
    return (
        f"{label} is one JSON object spread over several lines{keys}, not JSON lines, so nothing was published. "
        "It is not a Plaid response either, because it has no 'added' or 'transactions' array. "
        f"Write one transaction object per line instead, for example with {command}, and publish that file"
    )


def _first_line_decides_format(head: bytes) -> bool:
    """Return whether the first bytes of a pipe are enough for ``open_reader`` to tell the format, so reading can stop.

    They are when the first line has arrived whole and does not start an OFX
    document, a JSON array or a JSON object that spans lines. For those,
    ``open_reader`` reads up to ``HEAD_BYTES`` as it does from a file, and
    they are read whole anyway, so waiting delays nothing.
    """
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    first_line, line_end, _ = text.partition(b"\n")
    if not line_end or first_line.startswith((b"<", b"OFXHEADER", b"[")):
        return False
    if first_line.startswith(b"{"):
        try:
            json.loads(first_line)
        except (ValueError, RecursionError):
            return False
    return True


def _first_json_line_cut(head: bytes) -> bool:
    """Return whether ``head`` starts a JSON value (``{`` or ``[``) on a line that has no line end in it yet."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    return text.startswith((b"{", b"[")) and b"\n" not in text and b"\r" not in text


def _first_lines_arrived(head: bytes) -> bool:
    """Return whether a pipe has sent enough of a long first line for ``open_reader`` to tell the format.

    That is the whole first line when it decides the format on its own
    (``_first_line_decides_format``), and otherwise the next non-blank line
    as well, which ``json_array_message`` and ``json_object_message`` read.
    """
    if _first_line_decides_format(head):
        return True
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    _, line_end, rest = text.partition(b"\n")
    return bool(line_end) and b"\n" in rest.lstrip(b" \t\r\n")


def read_head(lines: LineSplitter, max_record_bytes: int) -> bytes:
    """Return the first bytes of the input that ``open_reader`` needs to tell its format, without consuming them.

    That is ``HEAD_BYTES``, or fewer from a pipe once the first line decides
    the format. A first line that starts a JSON value and does not end within
    those bytes is read on to its end, for at most ``max_record_bytes`` more,
    because a JSON line may well be longer than ``HEAD_BYTES``. A line cut
    at ``HEAD_BYTES`` is no sign of a JSON document spread over several lines.
    """
    head = lines.first_bytes(HEAD_BYTES, enough=_first_line_decides_format)
    if len(head) >= HEAD_BYTES and _first_json_line_cut(head):
        head = lines.first_bytes(HEAD_BYTES + max_record_bytes, enough=_first_lines_arrived)
    return head


def open_reader(
    source: BinaryIO,
    *,
    name: str = "",
    layout: Layout | None = None,
    format: str | None = None,
    user: str | None = None,
    max_record_bytes: int = MAX_RECORD_BYTES,
    before_read: Callable[[bool], None] | None = None,
):
    """Return the reader for a binary stream: CSV, JSON lines, OFX or a Plaid response.

    ``format`` is one of ``FORMATS`` or ``None`` to decide from the name's
    suffix and the first bytes (``_detect_format``). ``layout`` is a
    ``Layout``, a preset name or a layout file (``resolve_layout``), and
    ``user`` is the user_id for exports that name no user (``check_user``).
    Raises ``InputError`` for input that is not UTF-8 text (UTF-16, a
    spreadsheet workbook, an archive, a PDF), a JSON array, a JSON object
    spread over several lines, and a layout given for a format that has no
    columns. ``before_read`` goes to the ``LineSplitter``, which calls it
    while it waits on a pipe or terminal. OFX and Plaid input is read to its
    end without calling it.
    """
    from producer.ofx import OfxReader
    from producer.plaid import PlaidReader

    layout = resolve_layout(layout)
    check_user(user)
    lines = LineSplitter(source, max_line_bytes=max_record_bytes, before_read=before_read)
    head = read_head(lines, max_record_bytes)
    not_text = not_text_message(head, name or "the input")
    if not_text is not None:
        raise InputError(not_text)

    if format is None:
        format = _detect_format(head, name)
    if format not in FORMATS:
        raise InputError(f"format {format!r} is not supported; use {', '.join(FORMATS)}")
    if layout is not None and format != "csv":
        raise InputError(
            f"a column layout applies to CSV only, and {name or 'the input'} is {format}; "
            "leave out --layout for this file"
        )

    if format == "jsonl":
        whole = lines.at_end
        document_message = json_array_message(head, name, whole=whole) or json_object_message(head, name, whole=whole)
        if document_message is not None:
            raise InputError(document_message)
        return JsonLinesReader(lines, max_record_bytes=max_record_bytes, name=name)
    if format == "ofx":
        return OfxReader(source, head, name=name, user=user)
    if format == "plaid":
        return PlaidReader(source, head, name=name, user=user)
    return CsvReader(lines, layout=layout, user=user, max_record_bytes=max_record_bytes, name=name)


def scan_date_order(
    stream: BinaryIO,
    *,
    name: str = "",
    layout: Layout | None = None,
    format: str | None = None,
    user: str | None = None,
) -> None:
    """Read the dates of a CSV or JSON lines input once, then seek back to where it started.

    Raises ``InputError`` when the dates prove that the input is in the
    reverse day and month order of its layout (``CsvReader.check_date_order``)
    or, for JSON lines, of MM/DD/YYYY (``JsonLinesReader.check_date_order``).
    Also raises it for an input that cannot be read at all. OFX and Plaid
    input is not read beyond its first bytes. ``stream`` must be seekable.
    """
    start = stream.tell()
    try:
        reader = open_reader(stream, name=name, layout=layout, format=format, user=user)
        if isinstance(reader, (CsvReader, JsonLinesReader)):
            reader.check_date_order()
    finally:
        stream.seek(start)


def read_transactions(
    source: str | Path | BinaryIO | TextIO,
    *,
    layout: Layout | str | Path | None = None,
    format: str | None = None,
    user: str | None = None,
    converter: CurrencyConverter | None = None,
) -> Iterator[Outcome]:
    """Return an iterator of an ``Outcome`` for every row of a file, ``"-"`` (standard input) or a stream.

    ``source`` is a path, or a binary or text file object (``input_stream``).
    ``layout`` is a ``Layout``, a preset name such as ``"chase"`` or the
    path of a layout file, as for ``--layout``. A row in another currency
    than USD has its amount converted to USD by ``converter``, as
    ``publish_file`` converts it. The default converter has no rates, so
    such a row is ``Rejected`` with the currency and the fix. A
    ``CurrencyConverter(rates)`` converts with an FX rates file, and
    ``CurrencyConverter(unconverted="keep")`` keeps the amount as read,
    taken as USD.

    The arguments are checked before this returns: a value of the wrong
    type or an empty ``user`` raises ``InvalidOptionError``, and a layout
    name that is neither a preset nor a file raises ``InputError``. The
    input is opened and read as the iterator is consumed.
    """
    source = input_stream(source)
    layout = resolve_layout(layout)
    check_user(user)
    converter = check_converter(converter)
    return _converted(_read_outcomes(source, {"layout": layout, "format": format, "user": user}), converter)


def _converted(outcomes: Iterator[Outcome], converter: CurrencyConverter) -> Iterator[Outcome]:
    for outcome in outcomes:
        yield to_usd(converter, outcome) if isinstance(outcome, Row) else outcome


def _read_outcomes(source: str | Path | BinaryIO, options: dict) -> Iterator[Outcome]:
    if isinstance(source, (str, Path)):
        if str(source) == "-":
            yield from open_reader(sys.stdin.buffer, name="-", **options)
            return
        try:
            stream = open(source, "rb")
        except OSError as error:
            raise InputError(f"cannot open {str(source)!r}: {error.strerror}") from None
        with stream:
            yield from open_reader(stream, name=str(source), **options)
        return
    name = getattr(source, "name", None)
    # os.fdopen names a stream by its descriptor number, which is no file name.
    yield from open_reader(source, name=name if isinstance(name, str) else "", **options)


def input_stream(source: object) -> str | Path | BinaryIO:
    """Return ``source`` as the readers take it: a path (``"-"`` for standard input) or a binary stream.

    A path may be a ``str`` or any ``os.PathLike``. A text stream, such as
    ``io.StringIO`` or a file opened in text mode, is read as its text
    encoded as UTF-8 (``TextAsUtf8``). Raises ``InvalidOptionError`` for
    anything else, such as ``bytes`` or a number.
    """
    if isinstance(source, (str, Path)):
        return source
    if isinstance(source, os.PathLike):
        return Path(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        raise InvalidOptionError(
            f"source is {len(source)} bytes of data, not a file or a stream; wrap the data in "
            "io.BytesIO(data), or give the path of the file"
        )
    if isinstance(source, io.TextIOBase):
        return TextAsUtf8(source)
    read = getattr(source, "read", None)
    if callable(read):
        # Reading 0 characters or bytes consumes nothing, and shows which of the two the stream returns.
        sample = read(0)
        if isinstance(sample, str):
            return TextAsUtf8(source)
        if isinstance(sample, (bytes, bytearray)):
            return source
    raise InvalidOptionError(
        f"source {reprlib.repr(source)} is {_kind_of(source)}; give the path of a file, '-' for "
        "standard input, or a file object opened for reading, such as open(path, 'rb') or io.BytesIO(data)"
    )


def resolve_layout(layout: object) -> Layout | None:
    """Return the ``Layout`` a ``layout`` argument names: a ``Layout``, or a preset name or layout file, as for ``--layout``.

    Raises ``InputError`` for a name that is neither a file nor a preset
    (``load_layout``), and ``InvalidOptionError`` for a value of another type.
    """
    if layout is None or isinstance(layout, Layout):
        return layout
    if isinstance(layout, (str, os.PathLike)):
        return load_layout(layout)
    raise InvalidOptionError(
        f"layout {reprlib.repr(layout)} is {_kind_of(layout)}; give a Layout, the name of a preset "
        f"such as 'chase', or the path of a layout file"
    )


def user_problem(user: str) -> str | None:
    """Return why ``user`` cannot be the user_id of every row (empty, blank, too long), or None when it can."""
    text = user.strip()
    if not user:
        return "is empty"
    if not text:
        return "is blank"
    if not is_encodable(user):
        return "is not valid Unicode text"
    if len(text) > MAX_ID_LENGTH:
        return f"is {len(text)} characters long, above the limit of {MAX_ID_LENGTH} for a user_id"
    return None


def check_user(user: object) -> None:
    """Raise ``InvalidOptionError`` unless ``user`` is None or a string that can be the user_id of every row."""
    if user is None:
        return
    if not isinstance(user, str):
        raise InvalidOptionError(
            f"user {reprlib.repr(user)} is {_kind_of(user)}, not a string; "
            "give the user_id as text, such as user='alice'"
        )
    problem = user_problem(user)
    if problem is not None:
        raise InvalidOptionError(
            f"user {reprlib.repr(user)} {problem}; give the user_id that the rows belong to, such as "
            f"user='alice', or leave user out for the default user_id {DEFAULT_USER!r}"
        )


def _kind_of(value: object) -> str:
    """Return the type of ``value`` with its article, such as "an int" or "a dict", for error messages."""
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def check_converter(converter: object) -> CurrencyConverter:
    """Return ``converter``, or a ``CurrencyConverter`` without rates for None; raise ``InvalidOptionError`` for another type."""
    if converter is None:
        return CurrencyConverter()
    if not isinstance(converter, CurrencyConverter):
        raise InvalidOptionError(
            f"converter {reprlib.repr(converter)} is {_kind_of(converter)}; give a "
            "rewardpilot.fx.CurrencyConverter, such as CurrencyConverter(load_rates(path))"
        )
    return converter


def to_usd(converter: CurrencyConverter, row: Row) -> Row | Rejected:
    """Return the row with its amount in USD, the row itself when unchanged, or a ``Rejected`` naming the currency.

    The rejection carries the row's text as read (``Row.raw``), or the
    transaction in JSON for a row built without it.
    """
    transaction = row.transaction
    if transaction.currency == "USD":
        return row
    try:
        converted, changed = converter.convert(transaction)
    except ConversionError as error:
        return Rejected(
            RowError(error.reason, line=row.line, value=error.value, fix=error.fix,
                     column="currency" if isinstance(error, MissingRateError) else "amount_usd",
                     transaction_id=transaction.transaction_id),
            row.raw if row.raw is not None else transaction.model_dump_json(exclude_none=True),
        )
    return Row(row.line, converted) if changed else row
