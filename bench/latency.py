"""Row 5, latency under a steady offered load: a paced producer and 2 consumer processes.

The benchmark process publishes with ``Producer.publish_chunk`` (the
product's publisher, deduplication on) on a 5 ms tick, keeping the count
published at ``rate x elapsed``. Latency per result is ``completed_at -
published_at`` from the recommendation itself. ``published_at`` is the
entry id's millisecond, rounded down, so a latency reads up to 1 ms high.
"""

from __future__ import annotations

import signal
import time
from datetime import datetime

import orjson

from bench import data
from bench.context import BenchContext, BenchError, timeout_for
from bench.pipeline import ProductKit
from bench.procs import GatedChild, kill_all, start_all
from bench.stats import RowResult, percentile
from producer import Producer
from rewardpilot.models import Transaction
from rewardpilot.streams import StreamKeys

RATE_PER_SECOND = 2000
SECONDS = 30
QUICK_SECONDS = 5
CONSUMERS = 2
TICK_SECONDS = 0.005
PAGE = 2000


def paced_publish(ctx: BenchContext, keys: StreamKeys, transactions: list[Transaction], rate: float) -> float:
    """Publish at ``rate`` per second; return the rate achieved."""
    client = ctx.client()
    producer = Producer(client, keys)
    sent = 0
    started = time.perf_counter()
    try:
        while sent < len(transactions):
            due = min(len(transactions), int(rate * (time.perf_counter() - started)) + 1)
            if due > sent:
                producer.publish_chunk(transactions[sent:due])
                sent = due
            time.sleep(TICK_SECONDS)
    finally:
        client.close()
    return sent / (time.perf_counter() - started)


def read_latencies_ms(ctx: BenchContext, stream: str) -> list[float]:
    """Return ``completed_at - published_at`` of every result, in milliseconds, ascending."""
    client = ctx.client()
    latencies: list[float] = []
    start = "-"
    try:
        while True:
            entries = client.xrange(stream, min=start, count=PAGE)
            for _entry_id, fields in entries:
                result = orjson.loads(fields[b"data"])
                published = datetime.fromisoformat(result["published_at"])
                completed = datetime.fromisoformat(result["completed_at"])
                latencies.append((completed - published).total_seconds() * 1000)
            if len(entries) < PAGE:
                break
            start = "(" + entries[-1][0].decode()
    finally:
        client.close()
    return sorted(latencies)


def run_once(ctx: BenchContext, transactions: list[Transaction]) -> tuple[float, list[float]]:
    keys = ctx.new_keys()
    kit = ProductKit(ctx)
    consumers: list[GatedChild] = [kit.consumer(keys, index, drain=False) for index in range(CONSUMERS)]
    try:
        start_all(consumers)
        for child in consumers:
            child.go()
        time.sleep(0.5)  # the pools create the group and block on their first read

        achieved = paced_publish(ctx, keys, transactions, RATE_PER_SECOND)
        for child in consumers:
            child.signal(signal.SIGUSR1)
        for child in consumers:
            child.result(timeout=timeout_for(len(transactions)))

        latencies = read_latencies_ms(ctx, keys.results())
        if len(latencies) != len(transactions):
            raise BenchError(f"{len(latencies)} results for {len(transactions)} transactions")
        return achieved, latencies
    finally:
        kill_all(consumers)
        ctx.clean(keys)


def measure(ctx: BenchContext) -> RowResult:
    row = RowResult(5, f"latency at {RATE_PER_SECOND:,} tx/s offered")
    seconds = QUICK_SECONDS if ctx.quick else SECONDS
    count = RATE_PER_SECOND * seconds
    transactions = [Transaction(**values) for values in data.rows(count, seed=data.SEED + 5)]
    row.notes.append(f"{seconds} s at {RATE_PER_SECOND:,} tx/s, {CONSUMERS} consumer processes")

    for _ in range(ctx.repeat):
        achieved, latencies = run_once(ctx, transactions)
        row.figure("latency.offered", "offered rate achieved", "tx/s offered").runs.append(achieved)
        for name, fraction in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
            row.figure(f"latency.{name}", f"publish-to-result {name}", "ms").runs.append(percentile(latencies, fraction))
        row.figure("latency.max", "publish-to-result max", "ms").runs.append(latencies[-1])
    return row
