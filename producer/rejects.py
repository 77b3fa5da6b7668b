"""The rejects file: one JSON line per row that was not published, with the reason.

Each line has ``outcome`` (``rejected``, ``skipped`` or ``duplicate``),
``line``, ``column``, ``value``, ``reason``, ``fix``, ``transaction_id`` and
``raw`` (the row as read). The file is created on the first record.
``publish_file`` removes a file left at the same path by an earlier publish
before it reads any row, so the file only ever has the records of the
latest publish, and a publish that records no row leaves no file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Callable

from producer.readers import Rejected, Skipped
from rewardpilot.retention import age_text


class RejectsWriter:
    """Write rejected, skipped and duplicate rows to a JSON lines file, opened lazily."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        self._file: IO[str] | None = None

    def remove_earlier(self, announce: Callable[[str], None]) -> bool:
        """Delete a file already at ``path``, left by an earlier publish, after passing a notice to ``announce``.

        Returns whether there was such a file. Does nothing once this writer
        has opened the file. Raises OSError when the file cannot be deleted,
        such as when ``path`` is a directory.
        """
        if self._file is not None or not (self.path.exists() or self.path.is_symlink()):
            return False
        announce(f"replacing the rejects file of an earlier publish: {self.path}")
        self.path.unlink()
        return True

    def write(self, record: dict) -> None:
        if self._file is None:
            self._file = open(self.path, "w", encoding="utf-8", errors="backslashreplace")
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
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
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RejectsWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

