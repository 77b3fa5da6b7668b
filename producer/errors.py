"""The producer's own errors, so callers can catch input problems by name.

``InputError`` is about a whole file (no header, an unknown layout, a layout
config that does not parse): nothing in that file can be read. ``RowError`` is
about one row: that row is rejected and the rows around it still go through.
Readers raise nothing else for bad input.
"""

from __future__ import annotations


class ProducerError(Exception):
    """Base class of every error the producer raises on purpose."""


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
