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

import json
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

    def update(self, keys: list[str]) -> None:
        """Add every key of ``keys``, as ``add`` does one by one, with one call for the whole list."""
        bits = self._bits
        mask = self._mask
        for key in keys:
            value = hash(key)
            position = value & mask
            bits[position >> 3] |= 1 << (position & 7)
            position = (value >> 32) & mask
            bits[position >> 3] |= 1 << (position & 7)
        self.count += len(keys)

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
        if self._filters and self._may_be_spilled(transaction_id):
            row = self._database.execute(
                "SELECT line FROM seen WHERE transaction_id = ?", (transaction_id,),
            ).fetchone()
            if row is not None:
                return row[0]

        earlier = self._memory.setdefault(transaction_id, line)
        if earlier != line:
            return earlier
        if len(self._memory) > self.spill_after:
            self._spill()
        return None

    def _may_be_spilled(self, transaction_id: str) -> bool:
        """Return whether any filter may contain ``transaction_id``, as ``in`` on each filter would.

        The bit tests of ``BloomFilter.__contains__`` are written out here
        because, once ids have spilled, this runs for every row, and the
        ``in`` test per filter made ``add`` about 15% slower (timeit,
        CPython 3.11).
        """
        value = hash(transaction_id)
        high = value >> 32
        for bloom in self._filters:
            bits = bloom._bits
            mask = bloom._mask
            position = value & mask
            if bits[position >> 3] & (1 << (position & 7)):
                position = high & mask
                if bits[position >> 3] & (1 << (position & 7)):
                    return True
        return False

    def _spill(self) -> None:
        """Move the ids in the dict to the database and the filters, in one batch."""
        if self._database is None:
            self._directory = tempfile.TemporaryDirectory(prefix="rewardpilot-ids-")
            # One thread at a time uses the index, but not always the thread that created it. A reader
            # left unfinished by a stopped publish may be closed by the garbage collector, which calls
            # ``close`` on the thread it runs on, and sqlite3 rejects that without check_same_thread=False.
            self._database = sqlite3.connect(f"{self._directory.name}/seen.sqlite3", check_same_thread=False)
            self._database.execute("PRAGMA journal_mode = OFF")
            self._database.execute("PRAGMA synchronous = OFF")
            self._database.execute("CREATE TABLE seen (transaction_id TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")
            self._filters.append(BloomFilter(self.first_filter_capacity))

        self._insert(self._memory)
        pending = list(self._memory)
        start = 0
        while start < len(pending):
            bloom = self._filters[-1]
            if bloom.count >= bloom.capacity:
                bloom = BloomFilter(bloom.capacity * 4)
                self._filters.append(bloom)
            room = bloom.capacity - bloom.count
            bloom.update(pending[start:start + room])
            start += room
        self._memory.clear()

    def _insert(self, lines: dict[str, int]) -> None:
        """Insert each transaction_id of ``lines`` with its line into the database.

        The dict goes to SQLite as one JSON object that ``json_each`` reads,
        which took about half the CPU time of ``executemany`` with a
        parameter pair per id (SQLite 3.40, 150,000 ids in batches of
        50,000). A JSON text with an escape (an id with a quote, a
        backslash or a control character) takes ``executemany``, so that no
        id depends on how SQLite decodes escapes.
        """
        # An id is in the dict only when it was not in the database, so plain INSERT cannot conflict.
        document = json.dumps(lines, ensure_ascii=False)
        if "\\" not in document:
            try:
                self._database.execute("INSERT INTO seen SELECT key, value FROM json_each(?)", (document,))
                return
            except sqlite3.OperationalError:  # an SQLite built without its JSON functions
                pass
        self._database.executemany("INSERT INTO seen VALUES (?, ?)", lines.items())

    def close(self) -> None:
        """Delete the temporary database, if one was created. Any thread may call it, once no other uses the index."""
        database, self._database = self._database, None
        directory, self._directory = self._directory, None
        self._filters = []
        try:
            if database is not None:
                database.close()
        finally:
            if directory is not None:
                directory.cleanup()
