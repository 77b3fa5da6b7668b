"""Physical lines of a binary stream, read in blocks so memory stays bounded.

A line ends at ``\\r\\n``, ``\\n`` or a lone ``\\r`` (old Mac exports such as
Mint's end lines with CR only). A line longer than ``max_line_bytes`` is cut:
its first bytes are reported as too long and the rest up to the next line end
is dropped, so one broken line cannot exhaust memory.

A regular file is read in full blocks. A pipe, socket or terminal is read as
its data arrives: each read returns what the pipe contains, up to a block, so a
line is split out as soon as its line end has arrived.
"""

from __future__ import annotations

import io
import os
import re
import select
import stat
from typing import Any, BinaryIO, Callable, Iterator, NamedTuple

BLOCK_BYTES = 64 * 1024
# While a pipe or terminal sends nothing, ``LineSplitter.before_read`` is
# called this often, so its caller can notice a stop request.
IDLE_POLL_SECONDS = 0.1
MAX_LINE_BYTES = 64 * 1024
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

_LINE_END = re.compile(rb"\r\n|\r|\n")

# Builds a PhysicalLine from a tuple of all four fields without the Python-level
# __new__ that NamedTuple generates, which takes about two thirds longer per
# line (timeit, CPython 3.11).
_new_line = tuple.__new__


class PhysicalLine(NamedTuple):
    """One line of input: its 1-based number, its bytes and the line end that followed.

    A named tuple, not a dataclass, because one is built per line and a
    frozen dataclass takes about twice as long to build.
    """

    number: int
    content: bytes
    ending: bytes
    too_long: bool = False


class LineSplitter:
    """Iterate over the physical lines of a binary stream.

    ``bytes_read`` counts bytes taken from the stream so far, for progress
    bars. A UTF-8 byte-order mark at the start is dropped and ``had_bom``
    records it.

    ``before_read`` is called before each read from a pipe, socket or
    terminal, never for a regular file. Its argument is True when data is
    ready to read. While none is, it is called again every ``IDLE_POLL_SECONDS``, so
    the caller can send what it has gathered, or raise to stop reading.
    """

    def __init__(self, stream: BinaryIO, *, max_line_bytes: int = MAX_LINE_BYTES,
                 before_read: Callable[[bool], None] | None = None) -> None:
        self.stream = stream
        self.max_line_bytes = max_line_bytes
        self.before_read = before_read
        self.bytes_read = 0
        self.had_bom = False
        self.at_end = False  # set by first_bytes when it reaches the end of the input
        self._poll = _poll_if_live(stream)
        # read1 makes at most one read of the file descriptor, so it returns what a pipe contains.
        self._read_some = getattr(stream, "read1", stream.read) if self._poll is not None else stream.read
        self._lines = self._split()

    def __iter__(self) -> Iterator[PhysicalLine]:
        return self._lines

    def __next__(self) -> PhysicalLine:
        return next(self._lines)

    def first_bytes(self, count: int, *, enough: Callable[[bytes], bool] | None = None) -> bytes:
        """Return the first ``count`` bytes without consuming them; call before iterating.

        From a pipe, socket or terminal, fewer bytes are returned once
        ``enough`` accepts those read so far, so a live feed is not held
        until ``count`` bytes have arrived. Fewer are returned at the end of
        the input too, and ``at_end`` is then True. A later call with a
        larger ``count`` reads on from where the previous one stopped.
        """
        head = getattr(self, "_pushback", b"")
        while len(head) < count and not self.at_end:
            if self._poll is None:
                block = self.stream.read(count - len(head))
            else:
                block = self._read_when_ready(count - len(head))
            if not block:
                self.at_end = True
                break
            self.bytes_read += len(block)
            head += block
            if self._poll is not None and enough is not None and enough(head):
                break
        self._pushback = head
        return head

    def _read(self) -> bytes:
        pushed = getattr(self, "_pushback", b"")
        if pushed:
            self._pushback = b""
            return pushed
        if self._poll is None:
            block = self.stream.read(BLOCK_BYTES)
        else:
            block = self._read_when_ready(BLOCK_BYTES)
        self.bytes_read += len(block)
        return block

    def _read_when_ready(self, size: int) -> bytes:
        """Wait for data on a pipe, socket or terminal, calling ``before_read``, then return up to ``size`` bytes.

        Returns ``b""`` at the end of the input.
        """
        if self.before_read is not None:
            ready = bool(self._poll.poll(0))
            self.before_read(ready)
            while not ready:
                ready = bool(self._poll.poll(IDLE_POLL_SECONDS * 1000))
                self.before_read(ready)
        return self._read_some(size)

    def _split(self) -> Iterator[PhysicalLine]:
        buffer = b""
        number = 1
        dropping = False  # inside the rest of a line already reported as too long
        at_start = True

        while True:
            block = self._read()
            at_end = not block
            buffer += block

            if at_start:
                if len(buffer) < len(UTF8_BOM) and not at_end:
                    continue  # a short read: wait for enough bytes to see a byte-order mark
                at_start = False
                if buffer.startswith(UTF8_BOM):
                    buffer = buffer[len(UTF8_BOM):]
                    self.had_bom = True

            carriage_returns = buffer.count(b"\r")
            if carriage_returns == buffer.count(b"\r\n"):
                # Every CR is the first half of a CRLF, so every line ends with
                # LF or CRLF and bytes.split finds them faster than the pattern.
                # A lone CR, or a CR at the very end of the buffer, fails this
                # test and the pattern below handles it. When all line ends are
                # CRLF, or all LF, the split removes them whole. Otherwise the
                # split is at LF, and a line that ends with CR loses it.
                line_end = b"\r\n" if carriage_returns == buffer.count(b"\n") else b"\n"
                mixed = carriage_returns and line_end == b"\n"
                pieces = buffer.split(line_end)
                buffer = pieces.pop()
                for content in pieces:
                    if dropping:
                        dropping = False
                    elif mixed and content.endswith(b"\r"):
                        yield _new_line(PhysicalLine, (number, content[:-1], b"\r\n", False))
                    else:
                        yield _new_line(PhysicalLine, (number, content, line_end, False))
                    number += 1
            else:
                start = 0
                for match in _LINE_END.finditer(buffer):
                    # A CR at the very end of the buffer may be the first half of CRLF.
                    # NOTE: so from a pipe, a line ended by a lone CR is split out only once the next byte arrives.
                    if match.group() == b"\r" and match.end() == len(buffer) and not at_end:
                        break
                    if dropping:
                        dropping = False
                    else:
                        yield PhysicalLine(number, buffer[start:match.start()], match.group())
                    number += 1
                    start = match.end()
                buffer = buffer[start:]

            if len(buffer) > self.max_line_bytes:
                if not dropping:
                    yield PhysicalLine(number, buffer[: self.max_line_bytes], b"", too_long=True)
                    dropping = True
                buffer = b""

            if at_end:
                if buffer and not dropping:
                    yield PhysicalLine(number, buffer, b"")
                return


def _poll_if_live(stream: BinaryIO) -> Any:
    """Return a poll object for ``stream`` when it is a pipe, socket or terminal, else ``None``.

    A regular file, a block device and a stream without a file descriptor
    (such as ``io.BytesIO``) get ``None`` and are read in full blocks. So
    does every stream where ``select.poll`` is missing, as on Windows.
    """
    if not hasattr(select, "poll"):
        return None
    try:
        descriptor = stream.fileno()
        mode = os.fstat(descriptor).st_mode
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both an OSError and a ValueError
        return None
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        return None
    poll = select.poll()
    poll.register(descriptor, select.POLLIN)
    return poll


# The first bytes of file types that bank sites offer besides CSV, which are not text.
# ZIP_MAGIC is the local file header signature, which Python's zipfile module writes
# (zipfile.stringFileHeader). An .xlsx workbook is a ZIP archive. COMPOUND_FILE_MAGIC starts
# every Compound File Binary file, such as an .xls workbook (the sample header in section 3.1
# of Microsoft's [MS-CFB] specification). GZIP_MAGIC is the gzip member header, as
# Python's gzip module writes and checks it. PDF_MAGIC is the header that ISO 32000-1,
# section 7.5.2 requires on a PDF file's first line.
ZIP_MAGIC = b"PK\x03\x04"
COMPOUND_FILE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
GZIP_MAGIC = b"\x1f\x8b"
PDF_MAGIC = b"%PDF-"
# Names that only an Office Open XML or OpenDocument spreadsheet has in its first ZIP entries.
_WORKBOOK_MARKERS = (b"xl/", b"[Content_Types].xml", b"application/vnd.oasis.opendocument.spreadsheet")
EXPORT_AS_CSV = ("open it in a spreadsheet program and save it as CSV (UTF-8), or download the transactions "
                 "from the bank as CSV, OFX or QFX")


def looks_like_utf16(head: bytes) -> bool:
    """Return whether ``head`` looks like UTF-16 text without a byte-order mark.

    Text that is mostly ASCII, as CSV headers and JSON keys are, has a zero
    byte in every other position in UTF-16: the odd positions in
    little-endian, the even ones in big-endian. UTF-8 text has no zero bytes.
    It counts as UTF-16 when at least half of the first 512 byte pairs have
    a zero on one side and at most a tenth of that many on the other side.
    """
    sample = head[:1024]
    pairs = len(sample) // 2
    if pairs < 2:
        return False
    even_zeros = sample[0:pairs * 2:2].count(0)
    odd_zeros = sample[1:pairs * 2:2].count(0)
    high, low = max(even_zeros, odd_zeros), min(even_zeros, odd_zeros)
    return 2 * high >= pairs and 10 * low <= high


def not_text_message(head: bytes, label: str) -> str | None:
    """Build the error for an input that is not UTF-8 text, from its first bytes, or return None.

    ``label`` names the input, such as "the file 'export.xlsx'". The input
    is UTF-16 (with a byte-order mark, or ``looks_like_utf16``), a
    spreadsheet workbook, a ZIP or gzip archive, or a PDF document.
    """
    if head.startswith(UTF16_BOMS) or looks_like_utf16(head):
        return f"{label} is UTF-16 text; save it as UTF-8"
    if head.startswith(ZIP_MAGIC):
        if any(marker in head for marker in _WORKBOOK_MARKERS):
            return f"{label} is a spreadsheet workbook (such as .xlsx), not CSV; {EXPORT_AS_CSV}"
        return f"{label} is a ZIP archive, not a text file; unzip it and publish the file inside"
    if head.startswith(COMPOUND_FILE_MAGIC):
        return f"{label} is an Excel 97-2003 workbook (.xls), not CSV; {EXPORT_AS_CSV}"
    if head.startswith(GZIP_MAGIC):
        return f"{label} is compressed with gzip; decompress it (gunzip) and publish the file inside"
    if head.startswith(PDF_MAGIC):
        return (f"{label} is a PDF document, not transaction data; download the transactions from the bank "
                "as CSV, OFX or QFX")
    return None


class TextAsUtf8:
    """A binary stream over a text stream, such as ``io.StringIO``: its text, encoded as UTF-8.

    A lone surrogate is encoded with ``surrogatepass``, so the reader rejects
    its row as not UTF-8 in place of failing. The stream can be rewound to its
    start (``seek(0)``) when the text stream is seekable, which is all
    ``scan_date_order`` needs. It has no file descriptor, so a text stream
    over a pipe is read in blocks, not line by line as data arrives.
    """

    def __init__(self, text: Any) -> None:
        self._text = text
        self._start = text.tell() if _call_or_false(text, "seekable") else None
        self._pending = b""
        self._position = 0
        self.name = getattr(text, "name", None)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._start is not None

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if self._start is None or offset != 0 or whence != os.SEEK_SET:
            raise io.UnsupportedOperation("a text stream read as bytes can only be rewound to its start")
        self._text.seek(self._start)
        self._pending = b""
        self._position = 0
        return 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            data = self._pending + self._encode(self._text.read())
            self._pending = b""
        else:
            while len(self._pending) < size:
                # A character takes up to 4 bytes, so ``size`` characters cover ``size`` bytes.
                chunk = self._text.read(size)
                if not chunk:
                    break
                self._pending += self._encode(chunk)
            data, self._pending = self._pending[:size], self._pending[size:]
        self._position += len(data)
        return data

    def close(self) -> None:
        """Leave the text stream open: it belongs to the caller."""

    @staticmethod
    def _encode(text: str) -> bytes:
        if not isinstance(text, str):
            raise TypeError(f"the text stream returned {type(text).__name__}, not str")
        return text.encode("utf-8", "surrogatepass")


def _call_or_false(stream: Any, method: str) -> bool:
    """Return what ``stream.method()`` returns, or False when it has no such method or it fails."""
    function = getattr(stream, method, None)
    if function is None:
        return False
    try:
        return bool(function())
    except (OSError, ValueError):
        return False
