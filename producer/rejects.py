"""The rejects file: one JSON line per row that was not published, with the reason.

Each line has ``outcome`` (``rejected``, ``skipped`` or ``duplicate``),
``line``, ``column``, ``value``, ``reason``, ``fix``, ``transaction_id`` and
``raw`` (the row as read). The file is created on the first record.
``publish_file`` removes a file left at the same path by an earlier publish
before it reads any row, so the file only ever has the records of the
latest publish, and a publish that records no row leaves no file. It never
deletes a file that does not start with a rejects record, and it writes to a
device or a named pipe (``/dev/null``) without deleting it.

A file that cannot be written, or an earlier one that cannot be deleted,
raises ``RejectsFileError``, whose message names the path, the reason from
the operating system and the fix.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import IO, Callable

from producer.errors import ProducerError
from producer.readers import Rejected, Skipped
from rewardpilot.retention import age_text

# The fix printed with a rejects file that cannot be written: the CLI's option, then the library's parameter.
REJECTS_PATH_FIX = ("pick a rejects file in a directory you can write (--rejects PATH for "
                    "`rewardpilot publish` and `run`, rejects_path for publish_file)")


class RejectsFileError(ProducerError, OSError):
    """The rejects file could not be written, or the file of an earlier publish could not be deleted.

    An OSError too, so handlers of file errors still catch it. ``path`` is the
    rejects file, and ``errno`` and ``strerror`` are those of the OS error.
    ``str()`` is the message, which names the path, the reason and the fix.
    """

    def __init__(self, message: str, path: Path, error: OSError) -> None:
        super().__init__(error.errno, error.strerror or str(error))
        self.filename = str(path)
        self.path = path
        self.message = message

    def __str__(self) -> str:
        return self.message


def _is_rejects_file(path: Path) -> bool:
    """Return whether ``path`` is empty or starts with a rejects record, so deleting it loses no one's data.

    A symbolic link whose target is missing counts as one, since deleting
    the link removes nothing else.
    """
    try:
        with path.open("rb") as handle:
            first = handle.readline(_FIRST_LINE_LIMIT)
    except FileNotFoundError:
        return path.is_symlink()
    except OSError:
        return False
    if not first:
        return True  # an empty file
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("outcome") in _OUTCOMES


# Bytes of a file's first line read to tell whether it is a rejects file; a record contains one raw row.
_FIRST_LINE_LIMIT = 1 << 20
_OUTCOMES = ("rejected", "skipped", "duplicate")
_SPECIAL_FILE_TYPES = (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


class RejectsWriter:
    """Write rejected, skipped and duplicate rows to a JSON lines file, opened lazily."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        self._file: IO[str] | None = None

    def remove_earlier(self, announce: Callable[[str], None]) -> bool:
        """Delete a file already at ``path``, left by an earlier publish, after passing a notice to ``announce``.

        Returns whether there was such a file. Does nothing once this writer
        has opened the file, or for a device or a named pipe. Raises
        RejectsFileError when the file is not a rejects file (so it is kept)
        or cannot be deleted, such as when ``path`` is a directory. The
        publish calls this before it sends any row, so nothing is published then.
        """
        if self._file is not None or not (self.path.exists() or self.path.is_symlink()):
            return False
        if self.path.exists() and self.path.stat().st_mode & 0o170000 in _SPECIAL_FILE_TYPES:
            return False  # a device or a named pipe, such as /dev/null: written to, never deleted
        if not _is_rejects_file(self.path):
            raise RejectsFileError(
                f"{str(self.path)!r} exists and is not a rejects file (its first line is not a rejects record), so "
                "it is left as it is. Nothing was published. Move that file away, or name a rejects file that does "
                "not exist yet (--rejects PATH for `rewardpilot publish` and `run`, rejects_path for publish_file)",
                self.path, FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST)),
            )
        announce(f"replacing the rejects file of an earlier publish: {self.path}")
        try:
            self.path.unlink()
        except OSError as exc:
            raise RejectsFileError(
                f"cannot delete the rejects file of an earlier publish, {str(self.path)!r}: {_reason(exc)}. "
                f"Nothing was published. Delete or move that file, or {REJECTS_PATH_FIX}",
                self.path, exc,
            ) from exc
        return True

    def write(self, record: dict) -> None:
        """Append one record, opening the file on the first; raise RejectsFileError when that fails."""
        try:
            if self._file is None:
                self._file = open(self.path, "w", encoding="utf-8", errors="backslashreplace")
            self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        except OSError as exc:
            line = record.get("line")
            failed_record = f"the row on line {line}" if line is not None else "a row"
            raise RejectsFileError(
                f"cannot write the rejects file {str(self.path)!r}: {_reason(exc)}, so {failed_record} "
                "and the rejected or skipped rows after it are not recorded, and the publish stopped. "
                "Valid rows read before it may already be published; a publish of the same file again skips "
                f"them only within its de-duplication window (--dedup-window). To fix it, {REJECTS_PATH_FIX}",
                self.path, exc,
            ) from exc
        self.count += 1

    def rejected(self, outcome: Rejected) -> None:
        error = outcome.error
        self.write({
            "outcome": "rejected", "line": error.line, "column": error.column, "value": error.value,
            "reason": error.reason, "fix": error.fix, "transaction_id": error.transaction_id, "raw": outcome.raw,
        })

    def skipped(self, outcome: Skipped) -> None:
        self.write({
            "outcome": "skipped", "line": outcome.line, "column": None, "value": None,
            "reason": outcome.reason, "fix": "", "transaction_id": outcome.transaction_id, "raw": outcome.raw,
        })

    def duplicate(self, line: int, transaction_id: str, window_seconds: int) -> None:
        self.write({
            "outcome": "duplicate", "line": line, "column": "transaction_id", "value": transaction_id,
            "reason": f"transaction_id {transaction_id!r} was already published in the last {age_text(window_seconds)}",
            "fix": "", "transaction_id": transaction_id, "raw": None,
        })

    def close(self) -> None:
        """Close the file, flushing what is buffered; raise RejectsFileError when the flush fails."""
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            file.close()
        except OSError as exc:
            raise RejectsFileError(
                f"cannot finish writing the rejects file {str(self.path)!r}: {_reason(exc)}, so the last "
                f"records of rejected or skipped rows may be missing from it. To fix it, {REJECTS_PATH_FIX}",
                self.path, exc,
            ) from exc

    def __enter__(self) -> RejectsWriter:
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        try:
            self.close()
        except RejectsFileError:
            # An error already on its way out, such as a lost Redis connection, is the one to report.
            if exc_type is None:
                raise

