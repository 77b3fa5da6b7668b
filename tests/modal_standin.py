"""An in-memory stand-in for ``modal.Queue``, for tests only.

``InMemoryQueueStandIn`` is not Modal: it keeps items in this process. It has
the methods the Modal Queue transport uses, with the signatures of modal 1.6
(``put``, ``put_many``, ``get``, ``get_many``, ``len``), each callable plainly
or through ``.aio`` like Modal's methods, and Modal's documented behaviour:

* ``get_many(n, block=True, timeout=t)`` raises the stdlib ``queue.Empty``
  when nothing arrives within ``t`` seconds; ``block=False`` returns ``[]``;
* partition keys must be 1 to 64 bytes (``modal.exception.InvalidError``);
* a partition holds at most 5,000 items (``queue.Full`` on ``put``).

Items are copied through pickle on ``put``, as Modal serializes them.
"""

from __future__ import annotations

import asyncio
import pickle
import queue
import threading
import time
from collections import deque

from modal.exception import InvalidError

MAX_PARTITION_ITEMS = 5_000
POLL_SECONDS = 0.01


class _Method:
    """A method callable directly or as ``method.aio(...)``, like Modal's."""

    def __init__(self, function, coroutine):
        self._function = function
        self.aio = coroutine

    def __call__(self, *args, **kwargs):
        return self._function(*args, **kwargs)


def _partition_key(partition: str | None) -> bytes:
    if partition is None:
        return b""
    key = partition.encode("utf-8")
    if not 1 <= len(key) <= 64:
        raise InvalidError("Queue partition key must be between 1 and 64 characters.")
    return key


class InMemoryQueueStandIn:
    """A stand-in for ``modal.Queue`` that keeps FIFO partitions in memory."""

    def __init__(self):
        self._partitions: dict[bytes, deque] = {}
        self._lock = threading.Lock()
        self.put_many = _Method(self._put_many, self._put_many_aio)
        self.put = _Method(self._put, self._put_aio)
        self.get_many = _Method(self._get_many, self._get_many_aio)
        self.get = _Method(self._get, self._get_aio)
        self.len = _Method(self._len, self._len_aio)

    # put

    def _put_many(self, vs: list, block: bool = True, timeout: float | None = None, *,
                  partition: str | None = None, partition_ttl: int = 24 * 3600) -> None:
        key = _partition_key(partition)
        with self._lock:
            items = self._partitions.setdefault(key, deque())
            if len(items) + len(vs) > MAX_PARTITION_ITEMS:
                raise queue.Full(f"partition {partition!r} would exceed {MAX_PARTITION_ITEMS} items")
            items.extend(pickle.loads(pickle.dumps(value)) for value in vs)

    async def _put_many_aio(self, *args, **kwargs) -> None:
        self._put_many(*args, **kwargs)

    def _put(self, v, block: bool = True, timeout: float | None = None, *,
             partition: str | None = None, partition_ttl: int = 24 * 3600) -> None:
        self._put_many([v], block, timeout, partition=partition, partition_ttl=partition_ttl)

    async def _put_aio(self, *args, **kwargs) -> None:
        self._put(*args, **kwargs)

    # get

    def _take(self, key: bytes, n_values: int) -> list:
        with self._lock:
            items = self._partitions.get(key, deque())
            return [items.popleft() for _ in range(min(n_values, len(items)))]

    def _get_many(self, n_values: int, block: bool = True, timeout: float | None = None, *,
                  partition: str | None = None) -> list:
        key = _partition_key(partition)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            values = self._take(key, n_values)
            if values or not block:
                return values
            if deadline is not None and time.monotonic() >= deadline:
                raise queue.Empty()
            time.sleep(POLL_SECONDS)

    async def _get_many_aio(self, n_values: int, block: bool = True, timeout: float | None = None, *,
                            partition: str | None = None) -> list:
        key = _partition_key(partition)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            values = self._take(key, n_values)
            if values or not block:
                return values
            if deadline is not None and time.monotonic() >= deadline:
                raise queue.Empty()
            await asyncio.sleep(POLL_SECONDS)

    def _get(self, block: bool = True, timeout: float | None = None, *, partition: str | None = None):
        values = self._get_many(1, block, timeout, partition=partition)
        return values[0] if values else None

    async def _get_aio(self, block: bool = True, timeout: float | None = None, *, partition: str | None = None):
        values = await self._get_many_aio(1, block, timeout, partition=partition)
        return values[0] if values else None

    # len

    def _len(self, *, partition: str | None = None, total: bool = False) -> int:
        if partition and total:
            raise InvalidError("Partition must be null when requesting total length.")
        with self._lock:
            if total:
                return sum(len(items) for items in self._partitions.values())
            return len(self._partitions.get(_partition_key(partition), ()))

    async def _len_aio(self, *, partition: str | None = None, total: bool = False) -> int:
        return self._len(partition=partition, total=total)
