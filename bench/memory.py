"""Row 7, memory: peak RSS of ``publish`` reading a large CSV, and a consumer's RSS over many transactions.

``publish`` runs ``publish_file`` in a child and reports its own peak RSS
(VmHWM, because ``ru_maxrss`` can report the parent's peak; see
``bench.product_publisher``). The consumer is one ``ConsumerPool`` process
draining that same stream. The benchmark reads its VmRSS from
/proc/<pid>/status every 0.2 s, next to the group's progress (entries read
minus entries pending), and keeps the sample at a tenth of the transactions
and the last one.
The results stream is trimmed to about 10,000 entries so the server's
memory stays bounded. This row runs once, whatever the ``--repeat`` value.
"""

from __future__ import annotations

import time

from bench.context import BenchContext, BenchError, timeout_for
from bench.pipeline import ProductKit
from bench.procs import GatedChild, kill_all, peak_rss_kib
from bench.stats import RowResult
from rewardpilot.streams import StreamKeys

TRANSACTIONS = 1_000_000
QUICK_TRANSACTIONS = 20_000
RESULTS_MAXLEN = 10_000
SAMPLE_SECONDS = 0.2


def progress(ctx: BenchContext, keys: StreamKeys) -> int:
    """Return how many entries the live group has read and acknowledged."""
    client = ctx.client()
    try:
        for group in client.xinfo_groups(keys.transactions):
            if group["name"].decode() == keys.group():
                return int(group.get("entries-read") or 0) - int(group["pending"])
    finally:
        client.close()
    return 0


def publish_peak_kib(ctx: BenchContext, keys: StreamKeys, count: int) -> int:
    publisher = ProductKit(ctx).publisher(keys, ctx.csv_file(count))
    try:
        publisher.wait_ready()
        publisher.go()
        report = publisher.result(timeout=timeout_for(count, 2000))
    finally:
        publisher.kill()
    if report["published"] != count:
        raise BenchError(f"publish_file published {report['published']} of {count} rows")
    return report["peak_rss_kib"]


def consumer_rss_kib(ctx: BenchContext, keys: StreamKeys, count: int) -> tuple[int, int, int]:
    """Drain ``count`` entries with one consumer; return VmRSS at a tenth, VmRSS at the end, and VmHWM."""
    args = ["--url", ctx.url, "--prefix", keys.prefix, "--job", keys.job, "--drain",
            "--results-maxlen", str(RESULTS_MAXLEN)]
    consumer = GatedChild("bench.product_consumer", args, ctx.scratch / "memory-consumer.log")
    early = last = peak = None
    deadline = time.monotonic() + timeout_for(count)
    try:
        consumer.wait_ready()
        consumer.go()
        while consumer.process.poll() is None and time.monotonic() < deadline:
            done = progress(ctx, keys)
            try:
                rss, hwm = peak_rss_kib(consumer.pid)
            except (FileNotFoundError, ProcessLookupError, KeyError):
                break  # the process exited between the check and the read
            if early is None and done >= count // 10:
                early = rss
            if done >= count:
                last, peak = rss, hwm
            time.sleep(SAMPLE_SECONDS)
        stats = consumer.result(timeout=60)["stats"]
    finally:
        kill_all([consumer])

    if stats.get("results") != count:
        raise BenchError(f"the consumer wrote {stats.get('results')} results for {count} transactions")
    if early is None or last is None:
        raise BenchError("the consumer finished before both RSS samples were taken; use more transactions")
    return early, last, peak


def megabytes(kibibytes: int) -> float:
    """Return KiB (as /proc and getrusage report) in MB of 10^6 bytes."""
    return kibibytes * 1024 / 1_000_000


def measure(ctx: BenchContext) -> RowResult:
    row = RowResult(7, "memory")
    count = QUICK_TRANSACTIONS if ctx.quick else TRANSACTIONS
    keys = ctx.new_keys()
    row.notes.append(f"{count:,} transactions; consumer RSS sampled at {count // 10:,} and {count:,}")
    try:
        publish_kib = publish_peak_kib(ctx, keys, count)
        early, last, peak = consumer_rss_kib(ctx, keys, count)
    finally:
        ctx.clean(keys)

    row.figure("memory.publish_peak", f"publish of a {count:,}-row CSV, peak RSS", "MB").runs.append(megabytes(publish_kib))
    row.figure("memory.consumer_early", f"consumer RSS at {count // 10:,}", "MB").runs.append(megabytes(early))
    row.figure("memory.consumer_last", f"consumer RSS at {count:,}", "MB").runs.append(megabytes(last))
    row.figure("memory.consumer_growth", "consumer RSS growth", "%").runs.append((last / early - 1) * 100)
    row.figure("memory.consumer_peak", "consumer peak RSS (VmHWM)", "MB").runs.append(megabytes(peak))
    return row
