"""An in-memory stand-in for ``modal.Queue``, for tests only.

``InMemoryQueueStandIn`` is not Modal: it keeps items in this process. It has
the methods the Modal Queue transport uses, with the signatures of modal 1.6
(``put``, ``put_many``, ``get``, ``get_many``, ``len``), each callable plainly
or through ``.aio`` like Modal's methods, and the behaviour that modal 1.6.4's
``modal/queue.py`` and the Queues guide (https://modal.com/docs/guide/queues)
describe:

* ``get_many(n, block=True, timeout=t)`` raises the stdlib ``queue.Empty``
  when nothing arrives within ``t`` seconds; ``block=False`` returns ``[]``;
* partition keys must be 1 to 64 bytes (``modal.exception.InvalidError``);
* a partition holds at most 5,000 items. A blocking ``put`` or ``put_many``
  waits for room and raises the stdlib ``queue.Full`` only after ``timeout``
  (never, when ``timeout`` is None); ``block=False`` raises it at once;
* an item may be at most 1 MiB;
* a partition is cleared ``partition_ttl`` seconds (default 24 hours) after
  its last put;
* a ``timeout`` passed with ``block=False`` is ignored with a warning.

Items are copied through pickle on ``put``, as Modal serializes them (Modal
uses cloudpickle). The limit of 100,000 partitions per queue is not enforced.
"""

from __future__ import annotations

import asyncio
import pickle
import queue
import threading
import time
import warnings
from collections import deque
from typing import Callable

from modal.exception import InvalidError, RequestSizeError

MAX_PARTITION_ITEMS = 5_000
MAX_ITEM_BYTES = 1024 * 1024
DEFAULT_PARTITION_TTL_SECONDS = 24 * 3600
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


def _serialize(values: list) -> list[bytes]:
    encoded = [pickle.dumps(value) for value in values]
    for index, data in enumerate(encoded):
        if len(data) > MAX_ITEM_BYTES:
            # NOTE: Modal documents the 1 MiB item limit, but which exception a real
            # queue raises for one oversized item was not checked. modal 1.6.4 raises
            # RequestSizeError when the server rejects a whole request as too large.
            raise RequestSizeError(f"item {index} is {len(data)} bytes, over the {MAX_ITEM_BYTES}-byte limit "
                                   "of a Modal Queue item; split it into smaller items")
    return encoded


class InMemoryQueueStandIn:
    """A stand-in for ``modal.Queue`` that keeps FIFO partitions in memory.

    ``clock`` returns seconds and sets when partitions expire; tests pass a
    fake one to expire a partition without waiting.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._partitions: dict[bytes, deque] = {}
        self._expires_at: dict[bytes, float] = {}
        self._clock = clock
        self._lock = threading.Lock()
        self.put_many = _Method(self._put_many, self._put_many_aio)
        self.put = _Method(self._put, self._put_aio)
        self.get_many = _Method(self._get_many, self._get_many_aio)
        self.get = _Method(self._get, self._get_aio)
        self.len = _Method(self._len, self._len_aio)

    def _drop_expired(self) -> None:
        """Clear partitions whose TTL since their last put has passed. The caller must hold the lock."""
        now = self._clock()
        for key in [key for key, expires_at in self._expires_at.items() if expires_at <= now]:
            del self._expires_at[key]
            self._partitions.pop(key, None)

    # put

    def _try_put(self, key: bytes, encoded: list[bytes], partition_ttl: int) -> bool:
        with self._lock:
            self._drop_expired()
            items = self._partitions.setdefault(key, deque())
            if len(items) + len(encoded) > MAX_PARTITION_ITEMS:
                return False
            items.extend(pickle.loads(data) for data in encoded)
            self._expires_at[key] = self._clock() + partition_ttl
            return True

    @staticmethod
    def _full(partition: str | None) -> queue.Full:
        return queue.Full(f"partition {partition!r} would exceed {MAX_PARTITION_ITEMS} items")

    @staticmethod
    def _warn_ignored_timeout(block: bool, timeout: float | None, operation: str) -> None:
        if not block and timeout is not None:
            warnings.warn(f"timeout is ignored for a non-blocking {operation}", stacklevel=3)

    def _put_many(self, vs: list, block: bool = True, timeout: float | None = None, *,
                  partition: str | None = None, partition_ttl: int = DEFAULT_PARTITION_TTL_SECONDS) -> None:
        key = _partition_key(partition)
        encoded = _serialize(vs)
        self._warn_ignored_timeout(block, timeout, "put")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._try_put(key, encoded, partition_ttl):
            if not block or (deadline is not None and time.monotonic() >= deadline):
                raise self._full(partition)
            time.sleep(POLL_SECONDS)

    async def _put_many_aio(self, vs: list, block: bool = True, timeout: float | None = None, *,
                            partition: str | None = None,
                            partition_ttl: int = DEFAULT_PARTITION_TTL_SECONDS) -> None:
        key = _partition_key(partition)
        encoded = _serialize(vs)
        self._warn_ignored_timeout(block, timeout, "put")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._try_put(key, encoded, partition_ttl):
            if not block or (deadline is not None and time.monotonic() >= deadline):
                raise self._full(partition)
            await asyncio.sleep(POLL_SECONDS)

    def _put(self, v, block: bool = True, timeout: float | None = None, *,
             partition: str | None = None, partition_ttl: int = DEFAULT_PARTITION_TTL_SECONDS) -> None:
        self._put_many([v], block, timeout, partition=partition, partition_ttl=partition_ttl)

    async def _put_aio(self, v, block: bool = True, timeout: float | None = None, *,
                       partition: str | None = None, partition_ttl: int = DEFAULT_PARTITION_TTL_SECONDS) -> None:
        await self._put_many_aio([v], block, timeout, partition=partition, partition_ttl=partition_ttl)

    # get

    def _take(self, key: bytes, n_values: int) -> list:
        with self._lock:
            self._drop_expired()
            items = self._partitions.get(key, deque())
            return [items.popleft() for _ in range(min(n_values, len(items)))]

    def _get_many(self, n_values: int, block: bool = True, timeout: float | None = None, *,
                  partition: str | None = None) -> list:
        key = _partition_key(partition)
        self._warn_ignored_timeout(block, timeout, "get")
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
        self._warn_ignored_timeout(block, timeout, "get")
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
            self._drop_expired()
            if total:
                return sum(len(items) for items in self._partitions.values())
            return len(self._partitions.get(_partition_key(partition), ()))

    async def _len_aio(self, *, partition: str | None = None, total: bool = False) -> int:
        return self._len(partition=partition, total=total)
