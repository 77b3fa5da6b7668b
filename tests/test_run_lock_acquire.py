"""Taking a RunLock while Redis restarts: the SET is retried, a lost reply is no conflict, and the wait is bounded."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
import redis.asyncio as aioredis

from conftest import ValkeyProcess, one_server
from rewardpilot.run_lock import RunLock, RunLockHeld


async def take_while_restarting(server: ValkeyProcess, key: str) -> str | None:
    """Take the lock while the stopped server starts again in a thread; return the stored token."""
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=0.5)
    loop = asyncio.get_running_loop()
    try:
        starting = loop.run_in_executor(None, server.start)
        async with RunLock(client, key, lease_ms=5000, acquire_timeout_seconds=30) as lock:
            stored = await client.get(key)
            assert json.loads(stored) == json.loads(lock.token)
        await starting
        return stored
    finally:
        await client.aclose()


def test_lock_waits_for_restart(tmp_path):
    server = ValkeyProcess(tmp_path / "data")
    server.start()
    server.stop()
    try:
        stored = asyncio.run(take_while_restarting(server, "lock:restart"))
    finally:
        server.stop()

    assert stored is not None


def test_lock_gives_up_after_timeout(tmp_path):
    server = ValkeyProcess(tmp_path / "data")  # never started: nothing listens on its port

    async def take() -> None:
        client = aioredis.Redis.from_url(server.url, socket_connect_timeout=0.2)
        try:
            async with RunLock(client, "lock:down", acquire_timeout_seconds=0.5):
                pass
        finally:
            await client.aclose()

    with pytest.raises(redis.ConnectionError):
        asyncio.run(take())


class LostReplyClient:
    """A client whose first SET is applied by the server but whose reply is lost."""

    def __init__(self, client: aioredis.Redis):
        self.client = client
        self.lost = False

    async def set(self, *args, **kwargs):
        reply = await self.client.set(*args, **kwargs)
        if not self.lost:
            self.lost = True
            raise redis.ConnectionError("connection lost after the command was sent")
        return reply

    def __getattr__(self, name):
        return getattr(self.client, name)


@one_server
def test_lost_reply_takes_lock(redis_url, keys):
    key = f"{keys.prefix}lock:lost-reply"

    async def take() -> tuple[bool, bytes | None]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            async with RunLock(LostReplyClient(client), key, lease_ms=5000) as lock:
                held = await client.get(key)
                return lock.token == held.decode(), await client.get(key)
        finally:
            await client.aclose()

    own, _ = asyncio.run(take())
    assert own is True


@one_server
def test_other_holder_still_conflicts(redis_url, keys, sync_client):
    key = f"{keys.prefix}lock:other"
    sync_client.set(key, json.dumps({"holder": "host-9", "since": "2026-12-06T00:00:00Z"}), px=60_000)

    async def take() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            async with RunLock(LostReplyClient(client), key, lease_ms=5000):
                pass
        finally:
            await client.aclose()

    with pytest.raises(RunLockHeld) as caught:
        asyncio.run(take())
    assert caught.value.holder == "host-9"
