"""The producer's own errors, so callers can catch input problems by name.

``InputError`` is about a whole file (no header, an unknown layout, a layout
config that does not parse): nothing in that file can be read. ``RowError`` is
about one row: that row is rejected and the rows around it still go through.
Readers raise nothing else for bad input.

``Producer`` raises ``InvalidOptionError`` and ``UnsupportedClientError``
when it is built with an option or a client it cannot use,
``NotATransactionError`` for an item that is not a ``Transaction``, and
``PartitionCountError`` for a partition count it cannot publish with. An
error that stops ``Producer.publish_many`` part-way carries the
``PublishSummary`` of what was published before it in ``summary``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rewardpilot import partitions

if TYPE_CHECKING:
    from producer.publisher import PublishSummary


class ProducerError(Exception):
    """Base class of every error the producer raises on purpose.

    ``summary`` is set when the error stopped ``Producer.publish_many``: the
    counts of what that call published before it. It is None otherwise.
    """

    summary: PublishSummary | None = None


class InputError(ProducerError, ValueError):
    """A file that cannot be read at all, with the reason and the fix."""


class InvalidValueError(ValueError):
    """A value that does not parse, with the reason and the fix kept apart.

    ``str()`` gives "reason; fix", so callers that only show the text keep
    working, and readers copy ``reason`` and ``fix`` into a ``RowError``.
    """

    def __init__(self, reason: str, fix: str = "") -> None:
        self.reason = reason
        self.fix = fix
        super().__init__(f"{reason}; {fix}" if fix else reason)


class RowError(ProducerError, ValueError):
    """One rejected row: where it is, which value is wrong, and how to fix it.

    ``line`` is the 1-based line on which the row starts (a quoted field may
    span several lines). ``column`` is the header column or JSON key, or
    ``None`` when the whole row is wrong (bad bytes, not an object).
    ``transaction_id`` is the row's id when the reader could read one.
    """

    def __init__(
        self,
        reason: str,
        *,
        line: int,
        column: str | None = None,
        value: object = None,
        fix: str = "",
        transaction_id: str | None = None,
    ) -> None:
        self.reason = reason
        self.line = line
        self.column = column
        self.value = value
        self.fix = fix
        self.transaction_id = transaction_id
        super().__init__(self.message)

    @classmethod
    def from_value_error(cls, error: ValueError, *, line: int, column: str | None, value: object) -> RowError:
        """Build the error for a value a parser rejected, keeping an ``InvalidValueError``'s fix apart."""
        if isinstance(error, InvalidValueError):
            return cls(error.reason, line=line, column=column, value=value, fix=error.fix)
        return cls(str(error), line=line, column=column, value=value)

    @property
    def message(self) -> str:
        where = f"line {self.line}"
        if self.column is not None:
            where += f", column {self.column!r}"
        text = f"{where}: {self.reason}"
        if self.fix:
            text += f"; {self.fix}"
        return text

    def at_line(self, line: int) -> RowError:
        """Return a copy of this error placed on ``line``."""
        return RowError(self.reason, line=line, column=self.column, value=self.value, fix=self.fix,
                        transaction_id=self.transaction_id)


class BacklogTimeout(ProducerError, TimeoutError):
    """The stream's backlog stayed above the limit for longer than the wait allowed."""


class PublishStopped(ProducerError):
    """A stop requested with the producer's ``stop`` event, raised in place of sending the next chunk.

    It is raised before a chunk is sent, or while a chunk waits for the
    backlog or for a reconnect.
    """


class PublishInterrupted(ProducerError):
    """An error that is not a ``ProducerError`` stopped ``Producer.publish_many`` part-way.

    The original error is ``__cause__``: a Redis error, or whatever the
    caller's iterable raised, such as a pydantic ``ValidationError``.
    ``summary`` is what the call published before it.
    """


class InvalidOptionError(ProducerError, ValueError):
    """A ``Producer`` option out of its range or of the wrong type, with the fix."""


class PartitionCountError(ProducerError, partitions.PartitionCountError):
    """A partition count ``Producer`` cannot publish with, with the fix.

    Raised for a count out of range, for one that differs from the count
    stored in ``{prefix}partitions``, and when the stored count was deleted
    or changed while the producer was publishing. It subclasses
    ``rewardpilot.partitions.PartitionCountError`` (a ``ValueError``), so
    code that catches that class catches this one too.
    """


class UnsupportedClientError(ProducerError, TypeError):
    """A client ``Producer`` cannot publish with, such as an asyncio client or a URL."""


class NotATransactionError(ProducerError, TypeError):
    """An item given to ``Producer`` to publish that is not a ``rewardpilot.models.Transaction``.

    ``index`` is the item's 0-based position in the iterable or chunk, or
    None when the argument itself is not an iterable of transactions.
    """

    def __init__(self, message: str, *, index: int | None) -> None:
        self.index = index
        super().__init__(message)
