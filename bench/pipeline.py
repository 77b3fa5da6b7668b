"""Publish-then-consume and end-to-end measurements, shared by rows 3, 4 and 6.

A *kit* starts the gated children of one implementation: the plain loop
(``PlainKit``) or the product (``ProductKit``). Every measurement uses a
job of its own and deletes its keys afterwards.

Times come from two clocks of the same machine: ``time.time()`` when the
benchmark sends ``go``, and the server time in the id of the last result
entry. Polling only decides when to look, so it does not enter the figures.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from bench.context import BenchContext, BenchError, last_entry_seconds, timeout_for, wait_for_length
from bench.procs import GatedChild, kill_all, start_all
from rewardpilot.streams import StreamKeys

PLAIN_GROUP = "plain"


@dataclass
class Rates:
    """Transactions per second of one measurement; ``None`` where it was not measured."""

    publish: float | None = None
    consume: float | None = None
    end_to_end: float | None = None


class PlainKit:
    """Children of the plain redis-py loop (``bench.plain_worker``)."""

    name = "plain"

    def __init__(self, ctx: BenchContext):
        self.ctx = ctx

    def prepare(self, keys: StreamKeys) -> None:
        client = self.ctx.client()
        client.xgroup_create(keys.transactions, PLAIN_GROUP, id="0", mkstream=True)
        client.close()

    def publisher(self, keys: StreamKeys, csv_path) -> GatedChild:
        args = ["publish", "--url", self.ctx.url, "--stream", keys.transactions, "--file", str(csv_path)]
        return GatedChild("bench.plain_worker", args, self.ctx.scratch / "plain-publisher.log")

    def consumer(self, keys: StreamKeys, index: int, drain: bool) -> GatedChild:
        args = [
            "consume", "--url", self.ctx.url, "--stream", keys.transactions, "--group", PLAIN_GROUP,
            "--consumer", f"plain-{index}", "--results", keys.results(), "--stop-key", self.stop_key(keys),
        ]
        return GatedChild("bench.plain_worker", args, self.ctx.scratch / f"plain-consumer-{index}.log")

    def published_seconds(self, report: dict) -> float:
        return report["seconds"]

    def stop_key(self, keys: StreamKeys) -> str:
        return f"{keys.base}stop"

    def finish(self, consumers: list[GatedChild], keys: StreamKeys, rows: int) -> None:
        client = self.ctx.client()
        try:
            wait_for_length(client, keys.results(), rows, timeout_for(rows), consumers)
            client.set(self.stop_key(keys), 1)
        finally:
            client.close()
        for child in consumers:
            child.result(timeout=60)


class ProductKit:
    """Children running the product's own code (``bench.product_publisher`` / ``bench.product_consumer``)."""

    name = "product"

    def __init__(self, ctx: BenchContext, orchestrator: str | None = None, canned: bool = False):
        self.ctx = ctx
        self.orchestrator = orchestrator
        self.canned = canned  # results from bench.canned, so the engine's cost drops out

    def prepare(self, keys: StreamKeys) -> None:
        return None

    def publisher(self, keys: StreamKeys, csv_path) -> GatedChild:
        args = [
            "--url", self.ctx.url, "--prefix", keys.prefix, "--job", keys.job, "--file", str(csv_path),
            "--rejects", str(self.ctx.scratch / f"{keys.job}.rejects.jsonl"),
        ]
        return GatedChild("bench.product_publisher", args, self.ctx.scratch / "product-publisher.log")

    def consumer(self, keys: StreamKeys, index: int, drain: bool) -> GatedChild:
        args = ["--url", self.ctx.url, "--prefix", keys.prefix, "--job", keys.job]
        if drain:
            args.append("--drain")
        if self.orchestrator:
            args += ["--orchestrator", self.orchestrator]
        if self.canned:
            args.append("--canned")
        return GatedChild("bench.product_consumer", args, self.ctx.scratch / f"product-consumer-{index}.log")

    def published_seconds(self, report: dict) -> float:
        if report["published"] != report["rows"]:
            raise BenchError(f"publish_file published {report['published']} of {report['rows']} rows: {report}")
        return report["seconds"]

    def finish(self, consumers: list[GatedChild], keys: StreamKeys, rows: int) -> None:
        for child in consumers:
            child.signal(signal.SIGUSR1)  # drain: exit once the group is drained
        for child in consumers:
            child.result(timeout=timeout_for(rows))


def publish_then_consume(kit, keys: StreamKeys, rows: int, consumers: int) -> Rates:
    """Publish ``rows`` with no consumer running, then drain them with ``consumers`` processes."""
    ctx = kit.ctx
    csv_path = ctx.csv_file(rows)
    kit.prepare(keys)
    children: list[GatedChild] = []
    try:
        publisher = kit.publisher(keys, csv_path)
        children.append(publisher)
        publisher.wait_ready()
        publisher.go()
        published_seconds = kit.published_seconds(publisher.result(timeout=timeout_for(rows, 2000)))

        readers = [kit.consumer(keys, index, drain=True) for index in range(consumers)]
        children.extend(readers)
        start_all(readers)
        started = min(child.go() for child in readers)
        kit.finish(readers, keys, rows)
        return Rates(publish=rows / published_seconds, consume=rows / end_to_end_seconds(ctx, keys, rows, started))
    finally:
        kill_all(children)
        ctx.clean(keys)


def end_to_end(kit, keys: StreamKeys, rows: int, consumers: int) -> Rates:
    """Start ``consumers`` processes, then publish ``rows`` while they run; time the first XADD to the last result."""
    ctx = kit.ctx
    csv_path = ctx.csv_file(rows)
    kit.prepare(keys)
    children: list[GatedChild] = []
    try:
        readers = [kit.consumer(keys, index, drain=False) for index in range(consumers)]
        children.extend(readers)
        publisher = kit.publisher(keys, csv_path)
        children.append(publisher)
        start_all(children)
        for child in readers:
            child.go()

        started = publisher.go()
        kit.published_seconds(publisher.result(timeout=timeout_for(rows)))
        kit.finish(readers, keys, rows)
        return Rates(end_to_end=rows / end_to_end_seconds(ctx, keys, rows, started))
    finally:
        kill_all(children)
        ctx.clean(keys)


def end_to_end_seconds(ctx: BenchContext, keys: StreamKeys, rows: int, started: float) -> float:
    """Return seconds from ``started`` to the last result, after checking every row has one."""
    client = ctx.client()
    try:
        results = client.xlen(keys.results())
        if results != rows:
            raise BenchError(f"{keys.results()} has {results} results for {rows} transactions")
        return max(last_entry_seconds(client, keys.results()) - started, 0.001)
    finally:
        client.close()
