"""The lease on a run name: one holder at a time, renewed while held, released on leaving."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from rewardpilot.run_lock import RunLock, RunLockHeld


@pytest.fixture
async def client(redis_url):
    connection = aioredis.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


async def test_second_holder_refused(client, keys):
    key = f"{keys.base}lock:a"

    async with RunLock(client, key) as first:
        with pytest.raises(RunLockHeld) as held:
            async with RunLock(client, key):
                pass

    assert held.value.holder == first.holder
    assert held.value.since is not None
    assert first.holder in str(held.value)
    assert await client.exists(key) == 0


async def test_lease_renewed_while_held(client, keys):
    key = f"{keys.base}lock:b"

    async with RunLock(client, key, lease_ms=300):
        await asyncio.sleep(1.0)
        still_held = await client.exists(key)
        ttl_ms = await client.pttl(key)

    assert still_held == 1
    assert 0 < ttl_ms <= 300


async def test_dead_holder_lease_runs_out(client, keys):
    key = f"{keys.base}lock:c"
    await client.set(key, json.dumps({"holder": "gone-host-1", "since": "2026-12-05T00:00:00Z"}), px=200)

    with pytest.raises(RunLockHeld, match="gone-host-1"):
        async with RunLock(client, key):
            pass
    await asyncio.sleep(0.4)

    async with RunLock(client, key) as lock:
        assert json.loads(await client.get(key))["holder"] == lock.holder


async def test_leaving_keeps_a_lock_taken_over(client, keys):
    """A holder whose lease ran out does not delete the lock another process took since."""
    key = f"{keys.base}lock:d"

    async with RunLock(client, key):
        await client.set(key, "someone else")

    assert await client.get(key) == b"someone else"


async def test_unreadable_token_still_refused(client, keys):
    key = f"{keys.base}lock:e"
    await client.set(key, "not json", px=5000)

    with pytest.raises(RunLockHeld, match="another process"):
        async with RunLock(client, key):
            pass
