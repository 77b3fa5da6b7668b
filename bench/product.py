"""Row 4, the product end to end with the in-process engine, with 1 and 2 consumer processes.

Publish runs ``publish_file``, which is what ``rewardpilot publish`` runs:
CSV reading, validation, deduplication markers and pipelined XADD. Consume
runs ``ConsumerPool`` with the CLI's defaults (2 asyncio workers, batches
of 500).

One more figure runs the end-to-end measurement with 2 processes whose
consumers take results from ``bench.canned``'s cache: the same pipeline without
the engine's cost, to show how much of the gap to the plain loop the
engine accounts for.
"""

from __future__ import annotations

from bench.context import BenchContext
from bench.pipeline import ProductKit, end_to_end, publish_then_consume
from bench.stats import RowResult

CONSUMER_COUNTS = (1, 2)


def measure(ctx: BenchContext) -> RowResult:
    row = RowResult(4, "product, in-process engine")
    kit = ProductKit(ctx)
    canned = ProductKit(ctx, canned=True)
    rows = ctx.rows
    row.notes.append(f"{rows:,} transactions per measurement; every user judged against the whole catalog")

    for _ in range(ctx.repeat):
        for consumers in CONSUMER_COUNTS:
            split = publish_then_consume(kit, ctx.new_keys(), rows, consumers)
            row.figure("product.publish", "publish (publish_file)", "tx/s", reference="plain.publish").runs.append(split.publish)
            row.figure(
                f"product.consume.{consumers}", f"consume, {consumers} process(es)", "tx/s",
                reference=f"plain.consume.{consumers}",
            ).runs.append(split.consume)

            joined = end_to_end(kit, ctx.new_keys(), rows, consumers)
            row.figure(
                f"product.e2e.{consumers}", f"end to end, {consumers} process(es)", "tx/s",
                reference=f"plain.e2e.{consumers}",
            ).runs.append(joined.end_to_end)

        joined = end_to_end(canned, ctx.new_keys(), rows, 2)
        row.figure(
            "product.e2e.2.canned", "end to end, 2 processes, canned results (no engine)", "tx/s",
            reference="plain.e2e.2",
        ).runs.append(joined.end_to_end)
    return row
