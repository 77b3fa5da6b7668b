"""Remembering which transaction_ids a file already used, in bounded memory.

The first ``spill_after`` ids live in a dict. Past that the index moves to
SQLite in a temporary file, so a file of millions of rows does not keep
millions of ids in Python memory.
"""

from __future__ import annotations

import sqlite3
import tempfile

SPILL_AFTER = 50_000


class DuplicateIndex:
    """Map each transaction_id seen so far to the line that first used it."""

    def __init__(self, *, spill_after: int = SPILL_AFTER) -> None:
        self.spill_after = spill_after
        self._memory: dict[str, int] = {}
        self._database: sqlite3.Connection | None = None
        self._directory: tempfile.TemporaryDirectory | None = None

    def add(self, transaction_id: str, line: int) -> int | None:
        """Record ``transaction_id`` at ``line``; return the earlier line if it was already seen."""
        if self._database is None:
            earlier = self._memory.setdefault(transaction_id, line)
            if earlier != line:
                return earlier
            if len(self._memory) > self.spill_after:
                self._spill()
            return None

        cursor = self._database.execute(
            "INSERT INTO seen (transaction_id, line) VALUES (?, ?) "
            "ON CONFLICT (transaction_id) DO NOTHING RETURNING line",
            (transaction_id, line),
        )
        if cursor.fetchone() is not None:
            return None
        row = self._database.execute("SELECT line FROM seen WHERE transaction_id = ?", (transaction_id,)).fetchone()
        return row[0]

    def _spill(self) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="rewardpilot-ids-")
        self._database = sqlite3.connect(f"{self._directory.name}/seen.sqlite3")
        self._database.execute("PRAGMA journal_mode = OFF")
        self._database.execute("PRAGMA synchronous = OFF")
        self._database.execute("CREATE TABLE seen (transaction_id TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")
        self._database.executemany("INSERT INTO seen VALUES (?, ?)", self._memory.items())
        self._memory.clear()

    def close(self) -> None:
        """Delete the temporary database, if one was created."""
        if self._database is not None:
            self._database.close()
            self._database = None
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None
