"""The circuit breaker: opening, one probe in half-open, closing and reopening."""

from __future__ import annotations

import asyncio

import pytest
import structlog.testing

from consumer.breaker import BreakerState, CircuitBreaker

SHORT_COOLDOWN = 0.05


async def wait_until(condition, *, limit: float = 10.0) -> None:
    """Yield to the event loop until ``condition()`` holds, failing after ``limit`` seconds."""
    for _ in range(int(limit / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def open_breaker(threshold: int = 1, cooldown: float = SHORT_COOLDOWN, probe_timeout: float = 30.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=threshold, cooldown_seconds=cooldown, probe_timeout_seconds=probe_timeout)
    for _ in range(threshold):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    return breaker


def start_waiters(breaker: CircuitBreaker, count: int, passed: list[int]) -> list[asyncio.Task]:
    async def waiter(number: int) -> None:
        await breaker.wait_until_closed()
        passed.append(number)

    return [asyncio.create_task(waiter(number)) for number in range(count)]


async def cancel_all(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize(("settings", "named"), [
    ({"failure_threshold": 0}, "failure_threshold"),
    ({"cooldown_seconds": 0}, "cooldown_seconds"),
    ({"probe_timeout_seconds": -1}, "probe_timeout_seconds"),
])
def test_breaker_rejects_invalid_settings(settings, named):
    with pytest.raises(ValueError, match=named):
        CircuitBreaker(**settings)


async def test_breaker_opens_after_threshold():
    breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=30)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED

    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.stats.openings == 1


async def test_success_resets_failure_run():
    breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=30)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()

    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 2


async def test_closed_breaker_lets_callers_through():
    breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=30)
    await asyncio.wait_for(breaker.wait_until_closed(), 5)
    assert breaker.stats.probes == 0


async def test_open_breaker_blocks_during_cooldown():
    breaker = open_breaker(cooldown=30)
    passed: list[int] = []
    tasks = start_waiters(breaker, 2, passed)

    await asyncio.sleep(0.1)
    assert passed == []
    assert breaker.state is BreakerState.OPEN
    await cancel_all(tasks)


async def test_failures_while_open_do_not_reopen():
    breaker = open_breaker(cooldown=30)
    breaker.record_failure()
    breaker.record_failure()

    assert breaker.stats.openings == 1
    assert breaker.stats.failures == 3


async def test_half_open_lets_one_probe_through():
    breaker = open_breaker()
    passed: list[int] = []
    tasks = start_waiters(breaker, 3, passed)

    await wait_until(lambda: passed)
    # The others keep waiting while the probe is out; give them time to
    # (wrongly) get through.
    await asyncio.sleep(0.2)
    assert len(passed) == 1
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.stats.probes == 1
    await cancel_all(tasks)


async def test_probe_success_closes():
    breaker = open_breaker()
    passed: list[int] = []
    tasks = start_waiters(breaker, 3, passed)
    await wait_until(lambda: passed)

    breaker.record_success()
    await wait_until(lambda: len(passed) == 3)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.stats.openings == 1
    await cancel_all(tasks)


async def test_probe_failure_reopens():
    breaker = open_breaker()
    passed: list[int] = []
    tasks = start_waiters(breaker, 3, passed)
    await wait_until(lambda: passed)

    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.stats.openings == 2

    # After the second cool-down exactly one more waiter probes.
    await wait_until(lambda: len(passed) == 2)
    await asyncio.sleep(0.2)
    assert len(passed) == 2
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.stats.probes == 2
    await cancel_all(tasks)


async def test_abandoned_probe_passes_to_next_waiter():
    breaker = open_breaker()
    passed: list[int] = []
    tasks = start_waiters(breaker, 2, passed)
    await wait_until(lambda: passed)

    breaker.abandon_probe()
    await wait_until(lambda: len(passed) == 2)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.stats.probes == 2
    await cancel_all(tasks)


async def test_lost_probe_replaced_after_timeout():
    breaker = open_breaker(probe_timeout=0.1)
    passed: list[int] = []
    tasks = start_waiters(breaker, 2, passed)

    # The first probe never reports; after the probe timeout the second caller probes.
    await wait_until(lambda: len(passed) == 2)
    assert breaker.stats.probes == 2
    assert breaker.state is BreakerState.HALF_OPEN
    await cancel_all(tasks)


def test_opening_logged_with_consumer_and_run():
    breaker = CircuitBreaker(2, 30.0)
    breaker.bind_log(consumer="c-1", run="live")

    with structlog.testing.capture_logs() as logs:
        breaker.record_failure()
        breaker.record_failure()

    [opened] = [event for event in logs if "opened" in event["event"]]
    assert breaker.state == BreakerState.OPEN
    assert opened["consumer"] == "c-1"
    assert opened["run"] == "live"
