"""A Redis outage logs each periodic failure once, then once a minute with a count, then once when it ends."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import redis.asyncio as aioredis
import structlog.testing

from conftest import ValkeyProcess, one_server
from consumer import failure_log
from consumer.failure_log import RepeatedFailureLog
from consumer.pool import ConsumerPool
from consumer.recovery import recovery_loop
from consumer.settings import ConsumerSettings
from consumer.transports.base import Reclaimed, TransportError
from rewardpilot.cli.consume_cmd import name_lease
from rewardpilot.logs import get_logger
from rewardpilot.run_lock import RunLock

POLL_SECONDS = 0.05
POLL_ROUNDS = 600  # bounds every wait at about 30 s


def events(logs, text: str) -> list[dict]:
    return [entry for entry in logs if text in entry["event"]]


class Clock:
    """A stand-in for ``time.monotonic`` that a test moves forward."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# The helper


def test_failures_logged_once_per_interval(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(failure_log.time, "monotonic", clock)
    failures = RepeatedFailureLog(get_logger("consumer", consumer="c1"), interval_seconds=60.0)

    with structlog.testing.capture_logs() as logs:
        for _ in range(12):  # one a minute at 5 s apart
            failures.failed("recovery pass failed", error="Connection refused")
            clock.now += 5.0
        failures.failed("recovery pass failed", error="Connection refused")
        failures.succeeded("recovery pass completed again")

    failed = events(logs, "recovery pass failed")
    assert len(failed) == 2
    assert failed[0]["failures"] == 1
    assert failed[0]["suppressed_repeats"] == 0
    assert failed[0]["consumer"] == "c1"
    assert failed[0]["log_level"] == "warning"
    assert failed[1]["failures"] == 13
    assert failed[1]["suppressed_repeats"] == 11
    recovered = events(logs, "completed again")
    assert len(recovered) == 1
    assert recovered[0]["log_level"] == "info"
    assert recovered[0]["failures"] == 13
    assert recovered[0]["failing_seconds"] == 60.0


def test_next_outage_logged_at_once():
    failures = RepeatedFailureLog(get_logger("consumer"), interval_seconds=60.0)

    with structlog.testing.capture_logs() as logs:
        failures.failed("lock not renewed")
        failures.succeeded("lock renewed again")
        failures.succeeded("lock renewed again")
        failures.failed("lock not renewed")

    assert [entry["failures"] for entry in events(logs, "lock not renewed")] == [1, 1]
    assert len(events(logs, "renewed again")) == 1


# The recovery loop


class FlakyTransport:
    """A transport whose reclaim fails ``failures`` times, then succeeds and stops the pool."""

    def __init__(self, failures: int, stopping: asyncio.Event):
        self.failures = failures
        self.stopping = stopping
        self.calls = 0

    async def reclaim(self) -> Reclaimed:
        self.calls += 1
        if self.calls <= self.failures:
            raise TransportError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.stopping.set()
        return Reclaimed()


class StubPool:
    """The parts of ``ConsumerPool`` that ``recovery_loop`` uses."""

    def __init__(self, failures: int):
        self._stopping = asyncio.Event()
        self.settings = SimpleNamespace(claim_interval_seconds=0.001, batch_size=10)
        self.log = get_logger("consumer", consumer="c1", group="rp-consumers")
        self.transport = FlakyTransport(failures, self._stopping)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def wait_stopping(self) -> None:
        await self._stopping.wait()


async def test_recovery_failures_not_repeated():
    pool = StubPool(failures=20)

    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(recovery_loop(pool), timeout=30)

    assert pool.transport.calls == 21
    failed = events(logs, "recovery pass failed")
    assert len(failed) == 1
    assert failed[0]["consumer"] == "c1"
    assert failed[0]["error"].startswith("Error 111")
    recovered = events(logs, "recovery pass completed again")
    assert len(recovered) == 1
    assert recovered[0]["failures"] == 20
    assert recovered[0]["group"] == "rp-consumers"


# The lock, against a server that stops and starts again


async def wait_for(condition) -> bool:
    for _ in range(POLL_ROUNDS):
        if condition():
            return True
        await asyncio.sleep(POLL_SECONDS)
    return False


async def test_lock_renewal_failures_not_repeated(tmp_path):
    server = ValkeyProcess(tmp_path / "valkey")
    server.start()
    client = aioredis.Redis.from_url(server.url, socket_timeout=2.0, socket_connect_timeout=1.0)
    try:
        with structlog.testing.capture_logs() as logs:
            async with RunLock(client, "lock:outage", lease_ms=600,
                               log_context={"consumer": "m8", "group": "rp-consumers"}) as lock:
                server.stop()
                failing = await wait_for(lambda: lock._renew_failures.failures >= 4)
                server.start()
                renewed = await wait_for(lambda: events(logs, "lock renewed again"))
    finally:
        await client.aclose()
        server.stop()

    assert failing
    assert renewed
    failed = events(logs, "lock not renewed")
    assert len(failed) == 1
    assert failed[0]["consumer"] == "m8"
    assert failed[0]["group"] == "rp-consumers"
    assert failed[0]["key"] == "lock:outage"
    recovered = events(logs, "lock renewed again")
    assert len(recovered) == 1
    assert recovered[0]["failures"] >= 4
    assert recovered[0]["consumer"] == "m8"


@one_server
async def test_name_lease_logs_consumer(redis_url, keys):
    """`consume --name` binds the consumer and group to its lock's log lines, whose holder is only host and pid."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with name_lease(client, ConsumerSettings(keys=keys, consumer="m8")) as lock:
            context = lock.log.context
    finally:
        await client.aclose()

    assert context == {"consumer": "m8", "group": "rp-consumers"}


# The workers' reads


class DownThenUpTransport:
    """A transport whose reads fail ``failures`` times, then return nothing and stop the pool."""

    name = "stub"

    def __init__(self, failures: int):
        self.failures = failures
        self.reads = 0
        self.pool: ConsumerPool | None = None

    async def open(self) -> None:
        pass

    async def read(self, count: int, block_ms: int) -> list:
        self.reads += 1
        if self.reads <= self.failures:
            raise TransportError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.pool.stop()
        return []

    async def reclaim(self) -> Reclaimed:
        return Reclaimed()

    async def close(self) -> None:
        pass


@one_server
async def test_worker_outage_ends_with_one_line(redis_url, keys):
    transport = DownThenUpTransport(failures=3)
    client = aioredis.Redis.from_url(redis_url)
    try:
        settings = ConsumerSettings(keys=keys, consumer="c1", workers=1, claim_interval_seconds=60.0)
        pool = ConsumerPool(client, settings, transport=transport)
        transport.pool = pool
        with structlog.testing.capture_logs() as logs:
            await asyncio.wait_for(pool.run(), timeout=30)
    finally:
        await client.aclose()

    failed = events(logs, "transport unreachable")
    assert len(failed) == 1
    assert failed[0]["consumer"] == "c1"
    recovered = events(logs, "transport reachable again")
    assert len(recovered) == 1
    assert recovered[0]["failures"] == 3
