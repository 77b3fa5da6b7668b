"""``rewardpilot.results``: resuming by results-stream id, option checks, and block times the client can wait for."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis

from conftest import add_with_result
from rewardpilot import codec
from rewardpilot.connection import connect_async
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Recommendation, Transaction
from rewardpilot.results import (
    BLOCK_MARGIN_MS, InvalidResultEntryError, InvalidResultsOptionError, InvalidStreamIdError, ResultEntry,
    check_subscribe_start, read_block_ms, read_results, socket_timeout_of, subscribe, subscribe_entries,
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
    ({"on_invalid": "skip"}, TypeError, "on_invalid must be a callable or None, got str 'skip'"),
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
    try:
        got = [entry async for entry in subscribe_entries(client, keys.results(), block_ms=15_000,
                                                          idle_timeout_seconds=2)]
    finally:
        await client.aclose()

    assert got == []  # and no TimeoutError: each block is capped below the socket timeout


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


# A millisecond alone as start


def add_results_at(client, keys, entry_ids: list[str]) -> None:
    """Add one result under each of ``entry_ids``, with transaction ids resume-0, resume-1, ..."""
    engine = RulesEngine.default()
    for index, entry_id in enumerate(entry_ids):
        client.xadd(keys.results(), codec.encode_result(engine.recommend(purchase(index), WALLET)), id=entry_id)


def test_start_millisecond_means_whole_millisecond():
    assert check_subscribe_start("5000") == "5000-18446744073709551615"
    assert check_subscribe_start(b"5000") == "5000-18446744073709551615"
    assert check_subscribe_start("5000-0") == "5000-0"
    assert check_subscribe_start("0") == "0"
    assert check_subscribe_start("$") == "$"


async def test_start_millisecond_reads_after_it(redis_url, keys, sync_client):
    add_results_at(sync_client, keys, ["5000-0", "5000-1", "5000-2", "5001-0"])

    after_millisecond = await collect_entries(redis_url, keys.results(), start="5000")
    after_entry = await collect_entries(redis_url, keys.results(), start="5000-0")

    assert [entry.result_id for entry in after_millisecond] == ["5001-0"]
    assert [entry.result_id for entry in after_entry] == ["5000-1", "5000-2", "5001-0"]


# Idle timeout


async def test_idle_timeout_bounds_block(redis_url, keys):
    """No read blocks past the idle time left, so 0.3 s does not wait for a 5 s block."""
    client = connect_async(redis_url, block_ms=5000)
    real_xread = client.xread
    blocks = []

    async def recording_xread(*args, **kwargs):
        blocks.append(kwargs["block"])
        return await real_xread(*args, **kwargs)

    client.xread = recording_xread
    try:
        got = [entry async for entry in subscribe_entries(client, keys.results(), block_ms=5000,
                                                          idle_timeout_seconds=0.3)]
    finally:
        await client.aclose()

    assert got == []
    assert blocks[0] == 300
    assert max(blocks) <= 300


async def test_other_users_keep_idle_running(redis_url, keys, sync_client):
    """With ``user``, results of other users arriving all the time do not hold off the idle timeout."""
    client = connect_async(redis_url)
    real_xread = client.xread
    reads = []

    async def xread_after_other_user(*args, **kwargs):
        reads.append(kwargs["block"])
        if len(reads) <= 100:
            await asyncio.sleep(0.05)
            await asyncio.to_thread(add_results, sync_client, keys, 1, first=len(reads), users=("u2",))
        return await real_xread(*args, **kwargs)

    client.xread = xread_after_other_user
    try:
        got = [entry async for entry in subscribe_entries(client, keys.results(), start="0", user="u1",
                                                          block_ms=1000, idle_timeout_seconds=0.3)]
    finally:
        await client.aclose()

    assert got == []
    assert len(reads) < 100  # about 0.3 s / 0.05 s, while an idle time reset by them lasts 101 reads


# Entries that are not valid results


def add_invalid(client, keys, data: str | None) -> str:
    """Add a results entry whose ``data`` is ``data`` (left out when None); return its id."""
    fields = {"user_id": "u1", "transaction_id": "broken"}
    if data is not None:
        fields["data"] = data
    return client.xadd(keys.results(), fields)


async def test_invalid_entry_raises_named_error(redis_url, keys, sync_client):
    """The error names the entry, and starting after it reads the valid result that follows."""
    add_results(sync_client, keys, 1)
    bad_id = add_invalid(sync_client, keys, "{bad")
    last = add_results(sync_client, keys, 1, first=1)

    with pytest.raises(InvalidResultEntryError) as raised:
        await collect_entries(redis_url, keys.results(), start="0")
    resumed = await collect_entries(redis_url, keys.results(), start=raised.value.result_id)

    error = raised.value
    assert isinstance(error, ValueError)
    assert error.result_id == bad_id
    assert error.stream == keys.results()
    assert "Invalid JSON" in error.reason
    assert f"results entry {bad_id} of {keys.results()} is not a valid result" in str(error)
    assert f"start='{bad_id}'" in str(error)
    assert [entry.result_id for entry in resumed] == last


async def test_invalid_entry_yields_results_before(redis_url, keys, sync_client):
    first = add_results(sync_client, keys, 2)
    add_invalid(sync_client, keys, "{bad")
    client = connect_async(redis_url)
    got = []
    try:
        with pytest.raises(InvalidResultEntryError):
            async for entry in subscribe_entries(client, keys.results(), start="0", block_ms=200,
                                                 idle_timeout_seconds=0.4):
                got.append(entry.result_id)
    finally:
        await client.aclose()

    assert got == first


async def test_on_invalid_skips_and_reports(redis_url, keys, sync_client):
    first = add_results(sync_client, keys, 1)
    bad_json = add_invalid(sync_client, keys, "{bad")
    no_data = add_invalid(sync_client, keys, None)
    wrong_shape = add_invalid(sync_client, keys, "{}")
    last = add_results(sync_client, keys, 1, first=1)
    skipped: list[InvalidResultEntryError] = []

    got = await collect_entries(redis_url, keys.results(), start="0", on_invalid=skipped.append)

    assert [entry.result_id for entry in got] == first + last
    assert [error.result_id for error in skipped] == [bad_json, no_data, wrong_shape]
    assert "Invalid JSON: key must be a string" in skipped[0].reason
    assert skipped[1].reason == "it has no 'data' field"
    assert skipped[1].error is None
    assert skipped[2].reason.startswith("transaction_id: Field required; user_id: Field required")
    assert "more errors" in skipped[2].reason


async def test_subscribe_passes_on_invalid(redis_url, keys, sync_client):
    add_invalid(sync_client, keys, "{bad")
    add_results(sync_client, keys, 1)
    skipped = []
    client = connect_async(redis_url)
    try:
        got = [result async for result in subscribe(client, keys.results(), start="0", block_ms=200,
                                                      idle_timeout_seconds=0.4, on_invalid=skipped.append)]
    finally:
        await client.aclose()

    assert [result.transaction_id for result in got] == ["resume-0"]
    assert len(skipped) == 1


async def test_invalid_entry_of_other_user_ignored(redis_url, keys, sync_client):
    """An entry the user filter leaves out is never decoded, so it cannot fail."""
    sync_client.xadd(keys.results(), {"data": "{bad", "user_id": "u2", "transaction_id": "broken"})
    written = add_results(sync_client, keys, 1)

    got = await collect_entries(redis_url, keys.results(), start="0", user="u1")

    assert [entry.result_id for entry in got] == written


def test_read_results_invalid_entry(sync_client, keys):
    first = add_results(sync_client, keys, 1)
    bad_id = add_invalid(sync_client, keys, "[]")
    got = []

    with pytest.raises(InvalidResultEntryError) as raised:
        for result in read_results(sync_client, keys.results()):
            got.append(result.transaction_id)

    assert len(first) == 1
    assert got == ["resume-0"]
    assert raised.value.result_id == bad_id
    assert "Input should be an object" in raised.value.reason
    assert f"start='({bad_id}'" in str(raised.value)
