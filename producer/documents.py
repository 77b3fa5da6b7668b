"""Shared parts of the readers for whole-document formats (OFX, Plaid JSON).

Unlike CSV and JSON lines, these formats cannot be read a row at a time, so
the document is read into memory up to ``MAX_DOCUMENT_BYTES``.
"""

from __future__ import annotations

import re
from typing import BinaryIO, Iterator


from producer.duplicates import DuplicateIndex
from producer.errors import InputError, RowError
from producer.readers import Outcome, Rejected, Row, SubCentNotes
from rewardpilot.models import Transaction

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024

# A JSON path to an item of a top-level array, such as transactions[4].transaction_id.
_ARRAY_ITEM = re.compile(r"^(?P<array>\w+)\[(?P<index>\d+)\]")


def read_document(stream: BinaryIO, head: bytes, name: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """Return ``head`` followed by the rest of ``stream``; raise ``InputError`` above ``limit`` bytes."""
    rest = stream.read(limit + 1 - len(head)) if len(head) <= limit else b""
    data = head + rest
    if len(data) > limit:
        raise InputError(
            f"{name or 'the input'} is larger than the limit of {limit} bytes for one OFX or Plaid "
            "document; split it into smaller downloads"
        )
    return data


class DocumentReader(SubCentNotes):
    """Base of the OFX and Plaid readers: the attributes ``publish_file`` reads after iterating.

    A reader calls ``note_sub_cent`` for an entry it yields as a ``Row`` whose
    amount it rounded to whole cents, as the CSV and JSON lines readers do.
    """

    format = "document"

    def __init__(self, stream: BinaryIO, head: bytes, *, name: str = "", user: str | None = None,
                 duplicates: DuplicateIndex | None = None) -> None:
        self.stream = stream
        self.head = head
        self.name = name
        self.user = user
        self.duplicates = duplicates or DuplicateIndex()
        self.layout = None
        self.warnings: list[str] = []
        self.empty_lines = 0
        self.bytes_read = len(head)
        # JSON array name -> how many entries came before its first item, learned from each entry's path.
        self._array_starts: dict[str, int] = {}

    def __iter__(self) -> Iterator[Outcome]:
        try:
            yield from self._read()
        finally:
            self.duplicates.close()

    def _read(self) -> Iterator[Outcome]:
        raise NotImplementedError

    def read_all(self) -> bytes:
        data = read_document(self.stream, self.head, self.name)
        self.bytes_read = len(data)
        return data

    def check_duplicate(self, transaction: Transaction, line: int, raw: str, column: str) -> Outcome:
        """Return the entry as a ``Row``, or as ``Rejected`` when an earlier entry had its transaction_id.

        ``column`` names the entry's id, either an element such as ``FITID``
        or a JSON path such as ``transactions[4].transaction_id``. For a JSON
        path the error names the earlier entry by its path too, so both
        indexes count from 0.
        """
        self._note_array_start(line, column)
        earlier = self.duplicates.add(transaction.transaction_id, line)
        if earlier is None:
            return Row(line, transaction, raw)
        return Rejected(
            RowError(
                f"transaction_id {transaction.transaction_id!r} was already used by {self._describe(earlier)}",
                line=line, column=column, value=transaction.transaction_id,
                fix="remove the repeated transaction from the download", transaction_id=transaction.transaction_id,
            ),
            raw,
        )

    def _note_array_start(self, position: int, column: str) -> None:
        """Record how many entries precede the JSON array that ``column`` points into, such as added[3]."""
        match = _ARRAY_ITEM.match(column)
        if match is not None:
            self._array_starts.setdefault(match["array"], position - 1 - int(match["index"]))

    def _describe(self, position: int) -> str:
        """Name the entry at a 1-based ``position``: by its JSON path with a 0-based index, else "line 12"."""
        # Arrays are read in order, so the entry is in the last array that starts before it.
        starts = [(start, array) for array, start in self._array_starts.items() if start < position]
        if not starts:
            return f"{self.position_name} {position}"
        start, array = max(starts)
        return f"{array}[{position - 1 - start}] (indexes count from 0)"
