"""Row 1, the physical limit: redis-benchmark XADD of a 7-field entry, 64-deep pipeline, one client.

The entry has the seven fields of the documented CSV layout with typical
values. The figure is the requests per second that ``redis-benchmark --csv``
prints (redis-tools 7.0; its CSV has a header line, then one line per test
whose second column is requests per second).
"""

from __future__ import annotations

import csv
import shutil
import subprocess

from bench.context import BenchContext, BenchError
from bench.stats import RowResult

PIPELINE_DEPTH = 64
ENTRY = [
    "transaction_id", "ex-000123", "user_id", "user-1003", "merchant", "Whole Foods Market",
    "category", "groceries", "amount_usd", "84.20", "mcc", "5411", "timestamp", "2026-01-04T10:21:07Z",
]


def find_tool() -> str | None:
    return shutil.which("redis-benchmark") or shutil.which("valkey-benchmark")


def run_once(tool: str, ctx: BenchContext, key: str, requests: int) -> float:
    port = ctx.url.rsplit(":", 1)[1].split("/", 1)[0]
    command = [
        tool, "-h", "127.0.0.1", "-p", port, "-n", str(requests), "-P", str(PIPELINE_DEPTH), "-c", "1",
        "--csv", "XADD", key, "*", *ENTRY,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if completed.returncode != 0:
        raise BenchError(f"{tool} failed with status {completed.returncode}: {completed.stderr.strip()[:300]}")
    rows = list(csv.reader(line for line in completed.stdout.splitlines() if line.strip()))
    if len(rows) < 2 or len(rows[-1]) < 2:
        raise BenchError(f"{tool} printed no CSV result: {completed.stdout[:300]!r}")
    return float(rows[-1][1])


def measure(ctx: BenchContext) -> RowResult:
    row = RowResult(1, "redis-benchmark XADD (physical limit)")
    tool = find_tool()
    if tool is None:
        row.status = "not available (install redis-tools)"
        return row

    requests = ctx.rows
    key = f"{ctx.prefix}baseline"
    row.notes.append(f"{tool} -n {requests} -P {PIPELINE_DEPTH} -c 1, XADD of a 7-field entry")
    client = ctx.client()
    try:
        for _ in range(ctx.repeat):
            rate = run_once(tool, ctx, key, requests)
            row.figure("baseline.xadd", "XADD, 7 fields, pipeline 64", "tx/s").runs.append(rate)
            client.delete(key)
    finally:
        client.delete(key)
        client.close()
    return row
