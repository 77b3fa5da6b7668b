"""A consumer stand-in for the shared-rate-limit test: takes tokens from the
shared bucket and POSTs to a local HTTP server until a deadline.

Run as ``python tests/ratelimit_worker.py REDIS_URL PREFIX SERVER_URL WORKER
SECONDS TASKS RATE BURST``. Prints ``ready`` once connected, waits for a
line on stdin so that every worker starts together, then prints its counters
as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx
import redis.asyncio as aioredis

from consumer.ratelimit import RateLimitConfig, RedisTokenBucket
from rewardpilot.streams import StreamKeys


async def send_until(deadline: float, limiter: RedisTokenBucket, http: httpx.AsyncClient, worker: str) -> int:
    sent = 0
    while time.monotonic() < deadline:
        async with limiter.permit() as permit:
            grant_time = limiter.last_reply.server_time
            permit.mark_used()
            response = await http.post("/recommend", json={"worker": worker, "grant_time": grant_time})
        response.raise_for_status()
        await limiter.reward()
        sent += 1
    return sent


async def main(redis_url: str, prefix: str, server_url: str, worker: str, seconds: float, tasks: int, rate: float, burst: int) -> None:
    client = aioredis.Redis.from_url(redis_url)
    config = RateLimitConfig(rate=rate, burst=burst)
    keys = StreamKeys(prefix=prefix)
    # One limiter per task, so each task reads the grant time of its own reply.
    limiters = [RedisTokenBucket(client, config, keys=keys) for _ in range(tasks)]

    async with httpx.AsyncClient(base_url=server_url, timeout=10.0) as http:
        await limiters[0].peek()
        (await http.get("/ready")).raise_for_status()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        deadline = time.monotonic() + seconds
        sent = await asyncio.gather(*(send_until(deadline, limiter, http, worker) for limiter in limiters))

    await client.aclose()
    print(json.dumps({
        "worker": worker,
        "sent": sum(sent),
        "waits": sum(limiter.stats.waits for limiter in limiters),
        "seconds_waited": sum(limiter.stats.seconds_waited for limiter in limiters),
    }), flush=True)


if __name__ == "__main__":
    url, key_prefix, server, name, duration, task_count, tokens_per_second, burst_tokens = sys.argv[1:9]
    asyncio.run(main(url, key_prefix, server, name, float(duration), int(task_count), float(tokens_per_second), int(burst_tokens)))
