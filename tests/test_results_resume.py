"""``rewardpilot.results``: resuming by results-stream id, option checks, and block times the client can wait for."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio as aioredis

from conftest import add_with_result
from rewardpilot.connection import connect_async
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Recommendation, Transaction
from rewardpilot.results import (
    BLOCK_MARGIN_MS, InvalidResultsOptionError, InvalidStreamIdError, ResultEntry, read_block_ms, read_results,
    socket_timeout_of, subscribe, subscribe_entries,
)

WALLET = ["amex-gold"]


def purchase(index: int, user: str = "u1") -> Transaction:
    return Transaction.model_validate({
        "transaction_id": f"resume-{index}", "user_id": user, "merchant": "Corner Cafe", "category": "dining",
        "amount_usd": "12.50", "mcc": "5812", "timestamp": "2026-03-01T12:00:00Z",
    })


def add_results(client, keys, count: int, *, first: int = 0, users: tuple[str, ...] = ("u1",)) -> list[str]:
    """Add ``count`` transactions with their results; return the results stream's ids of the new ones."""
    engine = RulesEngine.default()
    before = client.xlen(keys.results())
    for index in range(first, first + count):
        add_with_result(client, keys, purchase(index, users[index % len(users)]), WALLET, engine)
    return [entry_id for entry_id, _ in client.xrange(keys.results())][before:]


async def collect_entries(url: str, stream: str, **options) -> list[ResultEntry]:
    client = connect_async(url)
    try:
        return [entry async for entry in subscribe_entries(client, stream, block_ms=200, idle_timeout_seconds=0.4,
                                                           **options)]
    finally:
        await client.aclose()


# Resuming


async def test_resume_from_result_id(redis_url, keys, sync_client):
    """A subscriber that handled 10 of 40 results and restarts from the 10th's result_id gets the other 30 only."""
    written = add_results(sync_client, keys, 40)

    first = await collect_entries(redis_url, keys.results(), start="0")
    resumed = await collect_entries(redis_url, keys.results(), start=first[9].result_id)

    assert [entry.result_id for entry in first] == written
    assert len(resumed) == 30
    assert resumed[0].recommendation.transaction_id == "resume-10"
    assert {entry.recommendation.transaction_id for entry in resumed}.isdisjoint(
        entry.recommendation.transaction_id for entry in first[:10])


async def test_entry_unpacks_as_pair(redis_url, keys, sync_client):
    written = add_results(sync_client, keys, 1)

    [(result_id, recommendation)] = await collect_entries(redis_url, keys.results(), start="0")

    [(transaction_id, _)] = sync_client.xrange(keys.transactions)
    assert result_id == written[0]
    assert isinstance(recommendation, Recommendation)
    assert recommendation.entry_id == transaction_id  # the transactions stream's id, which may differ from result_id


async def test_resume_with_user_filter(redis_url, keys, sync_client):
    """With ``user``, the last yielded result_id still resumes without repeats or gaps for that user."""
    add_results(sync_client, keys, 12, users=("u1", "u2"))

    first = await collect_entries(redis_url, keys.results(), start="0", user="u2")
    resumed = await collect_entries(redis_url, keys.results(), start=first[2].result_id, user="u2")

    assert [entry.recommendation.transaction_id for entry in first] == [f"resume-{i}" for i in range(1, 12, 2)]
    assert [entry.recommendation.transaction_id for entry in resumed] == [f"resume-{i}" for i in range(7, 12, 2)]


async def test_subscribe_yields_recommendations(redis_url, keys, sync_client):
    """``subscribe`` keeps yielding bare Recommendations, as before result ids were added."""
    add_results(sync_client, keys, 3)
    client = connect_async(redis_url)
    try:
        got = [result async for result in subscribe(client, keys.results(), start="0", block_ms=200,
                                                      idle_timeout_seconds=0.4)]
    finally:
        await client.aclose()

    assert all(isinstance(result, Recommendation) for result in got)
    assert [result.transaction_id for result in got] == ["resume-0", "resume-1", "resume-2"]


async def test_new_only_keeps_results_after_drop(redis_url, keys, sync_client):
    """With start="$", a result written while the connection is down is still read after reconnecting."""
    add_results(sync_client, keys, 2)
    client = connect_async(redis_url)
    real_xread = client.xread
    drops = []

    async def xread_dropping_once(*args, **kwargs):
        if not drops:
            drops.append(add_results(sync_client, keys, 1, first=2)[0])
            raise redis.ConnectionError("connection dropped by the test")
        return await real_xread(*args, **kwargs)

    client.xread = xread_dropping_once
    try:
        got = [entry async for entry in subscribe_entries(client, keys.results(), start="$", block_ms=200,
                                                          idle_timeout_seconds=0.4, reconnect_timeout_seconds=5)]
    finally:
        await client.aclose()

    assert [entry.result_id for entry in got] == drops
    assert got[0].recommendation.transaction_id == "resume-2"


async def test_new_only_skips_earlier(redis_url, keys, sync_client):
    add_results(sync_client, keys, 3)

    got = await collect_entries(redis_url, keys.results(), start="$")

    assert got == []


# Checks of start, before anything is read


@pytest.mark.parametrize("value", ["abc", "-", "+", ">", "1-2-3", "12-", "-5", "18446744073709551616-0", "", " 0"])
async def test_invalid_start_raises_on_call(redis_url, value):
    client = connect_async(redis_url)
    try:
        with pytest.raises(InvalidStreamIdError) as raised:
            subscribe_entries(client, "rptest:unused:results", start=value)
    finally:
        await client.aclose()

    message = str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert raised.value.value == value
    assert f"start={value!r} is not a valid stream entry id" in message
    assert "'$' (only new results)" in message
    assert "'0' (from the first result)" in message
    assert "<milliseconds>-<sequence>" in message


async def test_subscribe_checks_start_too(redis_url):
    client = connect_async(redis_url)
    try:
        with pytest.raises(InvalidStreamIdError, match="start='abc'"):
            subscribe(client, "rptest:unused:results", start="abc")
    finally:
        await client.aclose()


async def test_start_wrong_type_raises(redis_url):
    client = connect_async(redis_url)
    try:
        with pytest.raises(TypeError, match="start must be a str stream entry id"):
            subscribe_entries(client, "rptest:unused:results", start=5)
    finally:
        await client.aclose()


async def test_start_as_bytes_accepted(redis_url, keys, sync_client):
    written = add_results(sync_client, keys, 2)

    got = await collect_entries(redis_url, keys.results(), start=written[0].encode())

    assert [entry.result_id for entry in got] == written[1:]


@pytest.mark.parametrize("options, error, text", [
    ({"block_ms": 0}, InvalidResultsOptionError, "block_ms=0 is invalid; give 1 or more milliseconds"),
    ({"block_ms": -100}, InvalidResultsOptionError, "block_ms=-100 is invalid"),
    ({"block_ms": 1500.0}, TypeError, "block_ms must be an int number of milliseconds, got float"),
    ({"block_ms": True}, TypeError, "got bool True"),
    ({"idle_timeout_seconds": -1}, InvalidResultsOptionError, "idle_timeout_seconds=-1 is invalid"),
    ({"idle_timeout_seconds": float("nan")}, InvalidResultsOptionError, "idle_timeout_seconds=nan is invalid"),
    ({"reconnect_timeout_seconds": -0.5}, InvalidResultsOptionError, "reconnect_timeout_seconds=-0.5 is invalid"),
    ({"reconnect_timeout_seconds": "30"}, TypeError, "reconnect_timeout_seconds must be a number of seconds"),
])
async def test_invalid_options_raise(redis_url, options, error, text):
    client = connect_async(redis_url)
    try:
        with pytest.raises(error) as raised:
            subscribe_entries(client, "rptest:unused:results", **options)
    finally:
        await client.aclose()

    assert text in str(raised.value)


# Block time against the socket timeout


def test_socket_timeout_found():
    assert socket_timeout_of(aioredis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=7.5)) == 7.5
    assert socket_timeout_of(aioredis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=None)) is None
    assert socket_timeout_of(connect_async("redis://127.0.0.1:6379/0", block_ms=15_000)) == 20.0


def test_socket_timeout_default_found():
    """A client opened without socket_timeout reports its connection class's default."""
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    connection = client.connection_pool.make_connection()

    assert socket_timeout_of(client) == connection.socket_timeout


def test_block_capped_below_timeout():
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=10)

    assert read_block_ms(client, 15_000) == 10_000 - BLOCK_MARGIN_MS
    assert read_block_ms(client, 9_000) == 9_000
    assert read_block_ms(client, 200) == 200


def test_block_uncapped_without_timeout():
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=None)

    assert read_block_ms(client, 60_000) == 60_000


def test_timeout_too_short_raises():
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=0.5)

    with pytest.raises(InvalidResultsOptionError) as raised:
        subscribe_entries(client, "rptest:unused:results", block_ms=5000)

    message = str(raised.value)
    assert "socket timeout of 0.5 s is too short" in message
    assert "connect_async(url, block_ms=5000)" in message


async def test_long_block_quiet_stream(redis_url, keys):
    """block_ms above the socket timeout on a quiet stream ends at the idle timeout, not with TimeoutError."""
    client = aioredis.Redis.from_url(redis_url, socket_timeout=2)
    started = time.monotonic()
    try:
        got = [entry async for entry in subscribe_entries(client, keys.results(), block_ms=15_000,
                                                          idle_timeout_seconds=2)]
    finally:
        await client.aclose()
    elapsed = time.monotonic() - started

    assert got == []
    assert 1.5 < elapsed < 6  # two capped blocks of 1 s each, plus connection set-up


async def test_long_block_delivers_result(redis_url, keys, sync_client):
    """A capped block still returns a result published while it waits."""
    client = aioredis.Redis.from_url(redis_url, socket_timeout=2)

    async def publish_later() -> None:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(add_results, sync_client, keys, 1)

    publisher = asyncio.create_task(publish_later())
    try:
        got = [entry async for entry in subscribe_entries(client, keys.results(), block_ms=15_000,
                                                          idle_timeout_seconds=2)]
    finally:
        await publisher
        await client.aclose()

    assert [entry.recommendation.transaction_id for entry in got] == ["resume-0"]


# read_results bounds


@pytest.mark.parametrize("bounds, option", [
    ({"start": "x"}, "start"),
    ({"start": "+"}, "start"),
    ({"end": "-"}, "end"),
    ({"end": "(abc"}, "end"),
    ({"start": "1-2-3"}, "start"),
])
def test_read_results_invalid_bound(sync_client, keys, bounds, option):
    with pytest.raises(InvalidStreamIdError) as raised:
        read_results(sync_client, keys.results(), **bounds)

    assert raised.value.option == option
    assert f"{option}={bounds[option]!r} is not a valid stream entry id" in str(raised.value)
    assert "prefixed with '(' to leave that entry out" in str(raised.value)


def test_read_results_exclusive_start(sync_client, keys):
    written = add_results(sync_client, keys, 3)

    after_first = list(read_results(sync_client, keys.results(), start="(" + written[0]))
    up_to_second = list(read_results(sync_client, keys.results(), end=written[1]))

    assert [result.transaction_id for result in after_first] == ["resume-1", "resume-2"]
    assert [result.transaction_id for result in up_to_second] == ["resume-0", "resume-1"]
