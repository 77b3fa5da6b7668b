"""Row 3, the Python floor: a plain redis-py loop doing only the stream work, with 1 and 2 consumer processes."""

from __future__ import annotations

from bench.context import BenchContext
from bench.pipeline import PlainKit, end_to_end, publish_then_consume
from bench.stats import RowResult

CONSUMER_COUNTS = (1, 2)


def measure(ctx: BenchContext) -> RowResult:
    row = RowResult(3, "plain redis-py loop (Python floor)")
    kit = PlainKit(ctx)
    rows = ctx.rows
    row.notes.append(f"{rows:,} transactions per measurement; XREADGROUP COUNT 500; hiredis parser")

    for _ in range(ctx.repeat):
        for consumers in CONSUMER_COUNTS:
            split = publish_then_consume(kit, ctx.new_keys(), rows, consumers)
            row.figure("plain.publish", "publish (pipelined XADD)", "tx/s").runs.append(split.publish)
            row.figure(f"plain.consume.{consumers}", f"consume, {consumers} process(es)", "tx/s").runs.append(split.consume)

            joined = end_to_end(kit, ctx.new_keys(), rows, consumers)
            row.figure(f"plain.e2e.{consumers}", f"end to end, {consumers} process(es)", "tx/s").runs.append(joined.end_to_end)
    return row
