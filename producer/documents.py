"""Shared parts of the readers for whole-document formats (OFX, Plaid JSON).

Unlike CSV and JSON lines, these formats cannot be read a row at a time, so
the document is read into memory up to ``MAX_DOCUMENT_BYTES``.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator


from producer.duplicates import DuplicateIndex
from producer.errors import InputError, RowError
from producer.readers import Outcome, Rejected, Row
from rewardpilot.models import Transaction
from rewardpilot.logs import get_logger

log = get_logger(__name__)

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024


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


class DocumentReader:
    """Base of the OFX and Plaid readers: the attributes ``publish_file`` reads after iterating."""

    format = "document"
    position_name = "line"  # what ``Row.line`` counts in this format

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

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        # Debug only: the file summary shows each warning, and API callers read ``warnings``.
        log.debug("input warning", warning=message)

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
        earlier = self.duplicates.add(transaction.transaction_id, line)
        if earlier is None:
            return Row(line, transaction)
        return Rejected(
            RowError(
                f"transaction_id {transaction.transaction_id!r} was already used by {self.position_name} {earlier}",
                line=line, column=column, value=transaction.transaction_id,
                fix="remove the repeated transaction from the download", transaction_id=transaction.transaction_id,
            ),
            raw,
        )
