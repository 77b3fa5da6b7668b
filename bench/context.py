"""The state every row shares: the server URL, the sizes, a scratch folder, and key clean-up."""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench import data
from rewardpilot.streams import StreamKeys

ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.05


class BenchError(RuntimeError):
    """A measurement could not be completed (a child failed or a wait timed out)."""


@dataclass
class BenchContext:
    """Sizes and shared resources of one ``python -m bench.run``."""

    url: str
    scratch: Path
    rows: int
    repeat: int
    quick: bool
    prefix: str = field(default_factory=lambda: f"rpbench:{uuid.uuid4().hex[:10]}:")
    _csv_files: dict[int, Path] = field(default_factory=dict)
    _jobs: int = 0

    @property
    def python(self) -> str:
        return sys.executable

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=30)

    def new_keys(self) -> StreamKeys:
        """Return keys under a job of their own, so measurements never share a stream."""
        self._jobs += 1
        return StreamKeys(prefix=self.prefix, job=f"m{self._jobs}")

    def csv_file(self, rows: int) -> Path:
        """Return a CSV of ``rows`` generated transactions, written once per size."""
        if rows not in self._csv_files:
            path = self.scratch / f"transactions-{rows}.csv"
            data.write_csv(path, rows)
            self._csv_files[rows] = path
        return self._csv_files[rows]

    def clean(self, keys: StreamKeys | str | None = None) -> None:
        """Delete the keys of one measurement (its StreamKeys or key prefix), or else every key of this run."""
        if isinstance(keys, StreamKeys):
            keys = keys.base
        pattern = f"{keys or self.prefix}*"
        client = self.client()
        try:
            batch = []
            for key in client.scan_iter(match=pattern, count=5000):
                batch.append(key)
                if len(batch) >= 5000:
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)
        finally:
            client.close()


def wait_for_length(client: redis.Redis, stream: str, length: int, timeout: float, children=()) -> None:
    """Wait until ``stream`` has ``length`` entries; raise BenchError on timeout or a dead child."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.xlen(stream) >= length:
            return
        for child in children:
            child.check_alive()
        time.sleep(POLL_SECONDS)
    raise BenchError(f"{stream} reached {client.xlen(stream)} of {length} entries within {timeout:.0f} s")


def last_entry_seconds(client: redis.Redis, stream: str) -> float:
    """Return the server time, in Unix seconds, at which the last entry of ``stream`` was added."""
    entries = client.xrevrange(stream, count=1)
    if not entries:
        raise BenchError(f"{stream} is empty")
    entry_id = entries[0][0]
    entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(entry_id.split("-", 1)[0]) / 1000


def timeout_for(rows: int, slowest_rate: float = 500.0) -> float:
    """Return a generous bound for processing ``rows``: a minute plus rows at ``slowest_rate`` per second."""
    return 60.0 + rows / slowest_rate
