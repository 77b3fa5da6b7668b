"""A snapshot of the pipeline: streams, consumer groups, consumers, dead letters."""

from __future__ import annotations

import time

import redis

from consumer.ratelimit.redis_bucket import read_bucket_state
from rewardpilot.streams import StreamKeys


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_ids_age_ms(entry_id: str, now_ms: int) -> int:
    return max(0, now_ms - int(entry_id.split("-", 1)[0]))


def stream_status(client: redis.Redis, stream: str) -> dict:
    """Return a stream's length and, per consumer group, lag, pending and consumers."""
    try:
        length = client.xlen(stream)
        groups = client.xinfo_groups(stream) if length or client.exists(stream) else []
    except redis.ResponseError:
        return {"stream": stream, "length": 0, "groups": []}

    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    described = []
    for info in groups:
        name = _text(info["name"])
        pending = int(info.get("pending", 0))
        oldest_age_ms = None
        if pending:
            oldest = client.xpending_range(stream, name, min="-", max="+", count=1)
            if oldest:
                oldest_age_ms = _stream_ids_age_ms(_text(oldest[0]["message_id"]), now_ms)
        consumers = [
            {"name": _text(c["name"]), "pending": int(c["pending"]), "idle_ms": int(c["idle"])}
            for c in client.xinfo_consumers(stream, name)
        ]
        described.append({
            "name": name,
            "lag": info.get("lag"),
            "pending": pending,
            "oldest_pending_age_ms": oldest_age_ms,
            "last_delivered_id": _text(info.get("last-delivered-id")),
            "consumers": consumers,
        })
    return {"stream": stream, "length": length, "groups": described}


def collect_status(client: redis.Redis, keys: StreamKeys, runs: list[str] | None = None) -> dict:
    """Return the status of the transactions, results and dead-letter streams and the rate limit."""
    runs = runs or ["live"]
    return {
        "time": time.time(),
        "transactions": stream_status(client, keys.transactions),
        "results": {run: client.xlen(keys.results(run)) for run in runs},
        "dead_letters": client.xlen(keys.dead_letters),
        "rate_limit": rate_limit_status(client, keys),
    }


def rate_limit_status(client: redis.Redis, keys: StreamKeys) -> dict | None:
    """Return the shared orchestrator rate limit in tokens per second, or None when no consumer used it.

    ``tokens`` is as of the last call; the bucket expires a while after its
    last use, and then the next consumer starts at the configured rate.
    """
    state = read_bucket_state(client, keys.rate_limit())
    if state is None:
        return None
    return {
        "configured_rate": state.configured_rate,
        "effective_rate": state.effective_rate,
        "tokens": state.tokens,
        "burst": state.burst,
        "idle_seconds": state.idle_seconds,
    }
