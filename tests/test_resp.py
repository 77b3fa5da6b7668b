"""Commands packed by rewardpilot.resp, sent to real servers."""

from __future__ import annotations

import asyncio
import random

import hiredis
import pytest
import redis
import redis.asyncio as aioredis

from consumer.settle import Settler
from rewardpilot import resp
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction


@pytest.mark.parametrize("arguments", [
    ["PING"],
    ["SET", "key", "value"],
    ["XADD", "stream", "*", "data", b"\x00\r\n binary \xff"],
    ["EVALSHA", "a" * 40, 0, -17, 0, ""],
    ["SET", "caf\u00e9", "\u20ac" * 1000],
    ["XADD", "stream", "*", "data", b"x" * 100_000],
])
def test_pack_matches_hiredis(arguments):
    assert resp.pack(arguments) == hiredis.pack_command(tuple(resp.encode(value) for value in arguments))


def test_pack_generated_commands():
    """Every argument type and size around pack's own thresholds (small integers, long arguments)."""
    generator = random.Random(18245)
    for _ in range(2000):
        arguments = []
        for _ in range(generator.randrange(1, 16)):
            kind = generator.randrange(5)
            if kind == 0:
                arguments.append(generator.randrange(-2000, 2000))
            elif kind == 1:
                arguments.append(generator.randrange(2**62, 2**70))
            elif kind == 2:
                arguments.append("\u00e9" * generator.randrange(0, 300))
            else:
                arguments.append(generator.randbytes(generator.randrange(0, 600)))
        assert resp.pack(arguments) == hiredis.pack_command(tuple(resp.encode(value) for value in arguments))


@pytest.mark.parametrize("value", [True, 1.5, None, ["list"]])
def test_pack_rejects_other_types(value):
    with pytest.raises(TypeError, match="bytes, str or int"):
        resp.pack(["SET", "key", value])


@pytest.mark.parametrize("value", [True, 1.5, None, ["list"]])
def test_encode_rejects_other_types(value):
    with pytest.raises(TypeError, match="bytes, str or int"):
        resp.encode(value)


def test_execute_round_trip(redis_url, keys):
    client = redis.Redis.from_url(redis_url)
    key = f"{keys.prefix}packed"
    try:
        assert resp.execute(client, resp.pack(["SET", key, b"\xff\x00"])) in (b"OK", "OK", True)
        assert resp.execute(client, resp.pack(["GET", key])) == b"\xff\x00"
        assert client.get(key) == b"\xff\x00"
    finally:
        client.close()


def test_error_reply_keeps_connection(redis_url, keys):
    client = redis.Redis.from_url(redis_url)
    key = f"{keys.prefix}list"
    try:
        client.rpush(key, "a")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            resp.execute(client, resp.pack(["GET", key]))
        # The connection went back to the pool ready for the next command, whose reply it reads.
        assert resp.execute(client, resp.pack(["LLEN", key])) == 1
        assert client.connection_pool._created_connections == 1
    finally:
        client.close()


async def test_execute_async_round_trip(redis_url, keys):
    client = aioredis.Redis.from_url(redis_url)
    key = f"{keys.prefix}async"
    try:
        await resp.execute_async(client, resp.pack(["SET", key, "v"]))
        assert await resp.execute_async(client, resp.pack(["GET", key])) == b"v"
        with pytest.raises(redis.ResponseError):
            await resp.execute_async(client, resp.pack(["NOSUCHCOMMAND"]))
        assert await client.get(key) == b"v"
    finally:
        await client.aclose()


async def test_cancelled_read_drops_connection(redis_url, keys):
    client = aioredis.Redis.from_url(redis_url)
    stream = f"{keys.prefix}blocked"
    try:
        # XREAD BLOCK 2000 waits on an empty stream; cancel it while the reply is pending.
        task = asyncio.create_task(resp.execute_async(client, resp.pack(["XREAD", "BLOCK", 2000, "STREAMS", stream, "$"])))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        # Had the connection gone back still waiting, this would read the XREAD reply (nil).
        assert await resp.execute_async(client, resp.pack(["PING"])) in (b"PONG", "PONG", True)
    finally:
        await client.aclose()


async def test_settler_loads_missing_script(embedded_valkey, keys):
    # SCRIPT FLUSH only on the suite's private server, never on a shared one.
    client = aioredis.Redis.from_url(embedded_valkey.url)
    try:
        await client.script_flush()
        await client.xgroup_create(keys.transactions, keys.group(), id="0", mkstream=True)
        transaction = Transaction(transaction_id="t-1", user_id="u-1", merchant="Shell", amount_usd="40.00", mcc="5541")
        entry_id = (await client.xadd(keys.transactions, {"data": transaction.model_dump_json()})).decode()
        await client.xreadgroup(keys.group(), "c-1", {keys.transactions: ">"}, count=10)
        result = RulesEngine.default().evaluate(transaction, None, wallet_source="catalog")
        settler = Settler(client, keys, run="live", group=keys.group(), marker_ttl_seconds=60)

        counts = await settler.settle([(entry_id, result)], [])

        assert counts.written == 1
        assert await client.xlen(keys.results()) == 1
        assert (await client.xpending(keys.transactions, keys.group()))["pending"] == 0
    finally:
        await client.aclose()
