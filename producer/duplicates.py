"""Remembering which transaction_ids a file already used, in bounded memory.

The latest ``spill_after`` ids live in a dict. When the dict is full, its ids
move in one batch to SQLite in a temporary file, so a file of millions of
rows does not keep millions of ids in Python memory. A Bloom filter in memory
covers the ids in SQLite. An id that is not in the dict is looked up in
SQLite only when the filter reports that it may have been seen, which for a
file without repeated ids is at most about 1.4% of the rows. The first filter
takes 2 MiB and covers 1,048,576 spilled ids, and each later one is 4 times
the size of the one before.
"""

from __future__ import annotations

import sqlite3
import tempfile

SPILL_AFTER = 50_000
FIRST_FILTER_CAPACITY = 1 << 20  # ids in the first Bloom filter, which takes 2 MiB


class BloomFilter:
    """A set of strings that may report false positives but never false negatives.

    Positions come from Python's ``hash(str)``, which is salted per process,
    so a filter is only meaningful inside the process that built it. With
    ``capacity`` ids added, 16 to 32 bits per id and 2 probes give at most
    about 1.4% false positives. More ids raise that rate, so
    ``DuplicateIndex`` starts a new filter instead.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity {capacity} must be at least 1")
        bit_count = 1 << max(6, (capacity * 16 - 1).bit_length())
        self.capacity = capacity
        self.count = 0
        self._mask = bit_count - 1
        self._bits = bytearray(bit_count // 8)

    def add(self, key: str) -> None:
        bits = self._bits
        value = hash(key)
        position = value & self._mask
        bits[position >> 3] |= 1 << (position & 7)
        position = (value >> 32) & self._mask
        bits[position >> 3] |= 1 << (position & 7)
        self.count += 1

    def __contains__(self, key: str) -> bool:
        bits = self._bits
        value = hash(key)
        position = value & self._mask
        if not bits[position >> 3] & (1 << (position & 7)):
            return False
        position = (value >> 32) & self._mask
        return bool(bits[position >> 3] & (1 << (position & 7)))


class DuplicateIndex:
    """Map each transaction_id seen so far to the line that first used it."""

    def __init__(self, *, spill_after: int = SPILL_AFTER, first_filter_capacity: int = FIRST_FILTER_CAPACITY) -> None:
        self.spill_after = spill_after
        self.first_filter_capacity = first_filter_capacity
        self._memory: dict[str, int] = {}
        # Filters over the ids in the database. When the last one is full, a
        # new one with 4 times the capacity starts, so even tens of millions
        # of ids need only a few filters.
        self._filters: list[BloomFilter] = []
        self._database: sqlite3.Connection | None = None
        self._directory: tempfile.TemporaryDirectory | None = None

    def add(self, transaction_id: str, line: int) -> int | None:
        """Record ``transaction_id`` at ``line``; return the earlier line if it was already seen."""
        for bloom in self._filters:
            if transaction_id in bloom:
                row = self._database.execute(
                    "SELECT line FROM seen WHERE transaction_id = ?", (transaction_id,),
                ).fetchone()
                if row is not None:
                    return row[0]
                break

        earlier = self._memory.setdefault(transaction_id, line)
        if earlier != line:
            return earlier
        if len(self._memory) > self.spill_after:
            self._spill()
        return None

    def _spill(self) -> None:
        """Move the ids in the dict to the database and the filters, in one batch."""
        if self._database is None:
            self._directory = tempfile.TemporaryDirectory(prefix="rewardpilot-ids-")
            self._database = sqlite3.connect(f"{self._directory.name}/seen.sqlite3")
            self._database.execute("PRAGMA journal_mode = OFF")
            self._database.execute("PRAGMA synchronous = OFF")
            self._database.execute("CREATE TABLE seen (transaction_id TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")
            self._filters.append(BloomFilter(self.first_filter_capacity))

        # An id is in the dict only when it was not in the database, so plain INSERT cannot conflict.
        self._database.executemany("INSERT INTO seen VALUES (?, ?)", self._memory.items())
        bloom = self._filters[-1]
        for transaction_id in self._memory:
            if bloom.count >= bloom.capacity:
                bloom = BloomFilter(bloom.capacity * 4)
                self._filters.append(bloom)
            bloom.add(transaction_id)
        self._memory.clear()

    def close(self) -> None:
        """Delete the temporary database, if one was created."""
        if self._database is not None:
            self._database.close()
            self._database = None
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None
        self._filters = []
