"""A lease on a name in Redis, so that only one process at a time works under it.

``RunLock`` is an async context manager. Entering sets the lock key with
``SET NX PX``, and fails with ``RunLockHeld`` when another holder has it.
While held, a background task renews the lease every third of its length.
Leaving deletes the key only if its value is still this holder's token. A
holder that dies without leaving loses the lock when the lease runs out.

Replays use it on their run name, because each replay deletes and recreates
its run's consumer group: two replays of one run at the same time would
reset each other's group. ``rewardpilot consume --name`` uses it on the
consumer name.

The renewal keeps going through Redis errors and tries again at the next
renewal. It logs a warning at the first failure, then one a minute with the
count, and one line when a renewal works again
(``consumer.failure_log.RepeatedFailureLog``). When it finds the key gone
(the holder stalled for longer than the lease, or the server restarted
without its data), it takes the key again with ``SET NX`` and logs a warning. When another holder
has the key, it logs an error at every renewal and calls ``on_conflict``
once, so that the caller can stop its work.

NOTE: between the lease running out and the renewal that takes the key
again, another process can take it. For that window, two holders work at
once, until ``on_conflict`` stops this one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone

import redis
import redis.asyncio as aioredis

from consumer.failure_log import RepeatedFailureLog
from consumer.names import consumer_name
from rewardpilot.logs import get_logger

log = get_logger(__name__)

DEFAULT_LEASE_MS = 30_000

# KEYS[1] the lock key, ARGV[1] the holder's token; ARGV[2] the lease in ms.
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class RunLockHeld(RuntimeError):
    """Another holder has the lock. ``holder`` and ``since`` come from its token, when readable."""

    def __init__(self, key: str, holder: str | None, since: str | None):
        self.key = key
        self.holder = holder
        self.since = since
        owner = f"{holder} since {since}" if holder else "another process"
        super().__init__(f"{key} is held by {owner}")


class RunLock:
    """A lease on ``key`` for the duration of an ``async with`` block; see the module docstring.

    ``on_conflict`` is called once, on the event loop, with the ``RunLockHeld``
    that names the other holder, when a renewal finds the key taken by
    another holder. It may be set after entering the block.

    ``log_context`` goes into every line the lock logs, such as the
    ``consumer`` and ``group`` of a consumer's name lease, because
    ``holder`` names only the host and process.

    Entering the block retries a connection error or timeout for up to
    ``acquire_timeout_seconds`` (a Redis restart at start-up), then raises it.
    """

    def __init__(self, client: aioredis.Redis, key: str, *, lease_ms: int = DEFAULT_LEASE_MS,
                 on_conflict: Callable[[RunLockHeld], None] | None = None,
                 log_context: dict[str, str] | None = None, acquire_timeout_seconds: float = 30.0):
        self.client = client
        self.key = key
        self.lease_ms = lease_ms
        self.acquire_timeout_seconds = acquire_timeout_seconds
        self.on_conflict = on_conflict
        self.log = log.bind(**(log_context or {}))
        self._renew_failures = RepeatedFailureLog(self.log)
        self.holder = consumer_name()
        self.token = json.dumps({"holder": self.holder,
                                 "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
        self.conflict: RunLockHeld | None = None  # the first other holder a renewal found, if any
        self._released = asyncio.Event()
        self._renewer: asyncio.Task | None = None

    async def __aenter__(self) -> RunLock:
        if not await self._take():
            held = await self.client.get(self.key)
            # A SET whose reply was lost to a dropped connection took the lease all the same.
            if _text(held) != self.token:
                raise _held(self.key, held)
        self._renewer = asyncio.create_task(self._renew())
        return self

    async def _take(self) -> bool:
        """SET the lease with NX; retry connection errors and timeouts until ``acquire_timeout_seconds`` pass."""
        deadline = time.monotonic() + self.acquire_timeout_seconds
        delay = 0.1
        while True:
            try:
                return bool(await self.client.set(self.key, self.token, nx=True, px=self.lease_ms))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                self.log.warning("lock not taken: Redis unreachable; retrying", key=self.key,
                                 retry_in_seconds=delay, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def __aexit__(self, *exc_info) -> None:
        # The renewer stops on the event as well as on cancel, because redis-py can lose a
        # cancellation that arrives during a command.
        self._released.set()
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        try:
            await self.client.eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError as exc:
            self.log.warning("lock not released: Redis command failed; the lock is free when its lease runs out",
                             key=self.key, holder=self.holder, lease_ms=self.lease_ms, error=str(exc))

    async def _renew(self) -> None:
        interval = self.lease_ms / 3000
        while not self._released.is_set():
            try:
                await asyncio.wait_for(self._released.wait(), interval)
                return
            except TimeoutError:
                pass
            try:
                await self._renew_once()
            except redis.RedisError as exc:
                self._renew_failures.failed("lock not renewed: Redis command failed; retrying", key=self.key,
                                            holder=self.holder, error=str(exc), retry_in_seconds=interval)
                continue
            self._renew_failures.succeeded("lock renewed again after Redis command failures", key=self.key,
                                           holder=self.holder)

    async def _renew_once(self) -> None:
        """Extend the lease, take the key again when it is gone, or report the holder that has it now."""
        if await self.client.eval(_RENEW, 1, self.key, self.token, self.lease_ms):
            return
        if await self.client.set(self.key, self.token, nx=True, px=self.lease_ms):
            self.log.warning("lock taken again: the lease ran out before it was renewed (a stall or a Redis restart), "
                             "so another process may have held it in between", key=self.key, holder=self.holder)
            return
        held = _held(self.key, await self.client.get(self.key))
        self.log.error("lock held by another process: both work under one lock", key=self.key, holder=self.holder,
                       other_holder=held.holder or "unknown", other_since=held.since)
        if self.conflict is None:
            self.conflict = held
            if self.on_conflict is not None:
                self.on_conflict(held)


def _held(key: str, raw: bytes | str | None) -> RunLockHeld:
    try:
        token = json.loads(raw) if raw else {}
    except ValueError:
        token = {}
    if not isinstance(token, dict):
        token = {}
    return RunLockHeld(key, token.get("holder"), token.get("since"))


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
