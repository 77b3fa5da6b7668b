"""Row 2, the peer: the engine called once per transaction from a dramatiq actor.

One worker process (``dramatiq bench.dramatiq_peer --processes 1 --threads
8``, dramatiq's default thread count) on the Redis broker. The timer runs
from the first enqueue to the last result the actor adds, so it covers
enqueueing as row 4's end-to-end figure covers publishing.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from bench.context import ROOT, BenchContext, BenchError, last_entry_seconds, wait_for_length
from bench.stats import RowResult
from rewardpilot import codec
from rewardpilot.models import Transaction

TRANSACTIONS = 20_000
QUICK_TRANSACTIONS = 2_000
THREADS = 8
QUEUE = "default"
ACTOR = "recommend"


def worker_command() -> list[str] | None:
    executable = Path(sys.executable).with_name("dramatiq")
    if executable.exists():
        return [str(executable)]
    found = shutil.which("dramatiq")
    return [found] if found else None


def message(payload: str) -> Message:
    """Return the message ``dramatiq_peer.recommend.send(payload)`` would enqueue."""
    return Message(queue_name=QUEUE, actor_name=ACTOR, args=(payload,), kwargs={}, options={})


def load_payloads(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [codec.encode_transaction(Transaction(**row))[codec.DATA] for row in csv.DictReader(handle)]


def run_once(ctx: BenchContext, command: list[str], payloads: list[str], index: int) -> float:
    namespace = f"{ctx.prefix}dramatiq{index}"
    results = f"{namespace}:results"
    env = dict(os.environ, BENCH_REDIS_URL=ctx.url, BENCH_NAMESPACE=namespace, BENCH_RESULTS=results,
               PYTHONPATH=str(ROOT))
    broker = RedisBroker(url=ctx.url, namespace=namespace)

    log = (ctx.scratch / "dramatiq.log").open("ab")
    worker = subprocess.Popen(
        [*command, "bench.dramatiq_peer", "--processes", "1", "--threads", str(THREADS)],
        cwd=ROOT, env=env, stdout=log, stderr=log,
    )
    client = ctx.client()
    try:
        broker.enqueue(message(payloads[0]))  # warm-up: the worker is running once this result exists
        wait_for_length(client, results, 1, timeout=60)

        started = time.time()
        for payload in payloads:
            broker.enqueue(message(payload))
        wait_for_length(client, results, len(payloads) + 1, timeout=60 + len(payloads) / 100)
        return len(payloads) / max(last_entry_seconds(client, results) - started, 0.001)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)
        log.close()
        client.close()
        broker.close()
        ctx.clean(namespace)


def measure(ctx: BenchContext) -> RowResult:
    row = RowResult(2, "dramatiq actor per transaction (peer)")
    command = worker_command()
    if command is None:
        row.status = "not available (pip install 'dramatiq[redis]')"
        return row

    count = QUICK_TRANSACTIONS if ctx.quick else TRANSACTIONS
    payloads = load_payloads(ctx.csv_file(count))
    row.notes.append(f"{count:,} messages, 1 worker process, {THREADS} threads, Redis broker")
    for index in range(ctx.repeat):
        rate = run_once(ctx, command, payloads, index)
        row.figure("dramatiq.e2e", "end to end, 1 process", "tx/s").runs.append(rate)
    return row
