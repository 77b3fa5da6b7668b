"""CPU time per transaction of each process (publisher, consumer, server), plain loop against product.

    python -m bench.cpu_budget [--rows 100000] [--end-to-end]

Runs row 3 (the plain loop) and row 4 (the product) once each as publish,
then drain with one consumer process, against a private server. With
``--end-to-end`` it runs each as row 4's end-to-end measurement instead:
2 consumer processes started first, then the publisher, all at once. Each child
reports the CPU seconds it used between its go and its report
(``time.process_time``, every thread of the process), and the server's
``used_cpu_user + used_cpu_sys`` from INFO is read before and after each
phase. On a machine where every process competes for the same cores, the
end-to-end rate cannot exceed cores / (sum of the three figures), which
the last line prints as an upper bound, not a measurement.

NOTE: the server figure counts everything the server did in the phase,
including the benchmark's own polling, which is a few commands per second.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import redis

from bench.context import BenchContext, BenchError, timeout_for
from bench.pipeline import PlainKit, ProductKit, end_to_end_seconds
from bench.procs import kill_all, start_all
from bench.server import BenchServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="CPU per transaction of each process, plain loop against product.")
    parser.add_argument("--rows", type=int, default=100_000, help="transactions per measurement (default 100,000)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="publish while 2 consumer processes run, as row 4's end-to-end figure does")
    return parser.parse_args(argv)


def server_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(kit, ctx: BenchContext, rows: int) -> dict[str, float]:
    """Publish ``rows``, then drain them with one consumer; return CPU microseconds per transaction by process."""
    keys = ctx.new_keys()
    kit.prepare(keys)
    client = ctx.client()
    children = []
    try:
        publisher = kit.publisher(keys, ctx.csv_file(rows))
        children.append(publisher)
        publisher.wait_ready()
        before = server_cpu(client)
        publisher.go()
        published = publisher.result(timeout=timeout_for(rows, 2000))
        publish_server = server_cpu(client) - before

        consumer = kit.consumer(keys, 0, drain=True)
        children.append(consumer)
        start_all([consumer])
        before = server_cpu(client)
        consumer.go()
        kit.finish([consumer], keys, rows)
        consumed = consumer.report or {}
        consume_server = server_cpu(client) - before
    finally:
        kill_all(children)
        client.close()
        ctx.clean(keys)

    if "cpu_seconds" not in published or "cpu_seconds" not in consumed:
        raise BenchError("a child reported no cpu_seconds; is it an older bench child?")
    per_row = 1e6 / rows
    return {
        "publisher": published["cpu_seconds"] * per_row,
        "consumer": consumed["cpu_seconds"] * per_row,
        "server (publish)": publish_server * per_row,
        "server (consume)": consume_server * per_row,
    }


def measure_end_to_end(kit, ctx: BenchContext, rows: int, consumers: int = 2) -> dict[str, float]:
    """Publish ``rows`` while ``consumers`` processes drain them; return CPU microseconds per transaction by process.

    Every process competes for the same CPUs here, as in row 4's end-to-end
    figure, so the figures include the cost of sharing them. The result also
    contains the rate, under "rate (tx/s)".
    """
    keys = ctx.new_keys()
    kit.prepare(keys)
    client = ctx.client()
    children = []
    try:
        readers = [kit.consumer(keys, index, drain=False) for index in range(consumers)]
        children.extend(readers)
        publisher = kit.publisher(keys, ctx.csv_file(rows))
        children.append(publisher)
        start_all(children)
        for reader in readers:
            reader.go()

        before = server_cpu(client)
        started = publisher.go()
        published = publisher.result(timeout=timeout_for(rows))
        kit.finish(readers, keys, rows)
        server = server_cpu(client) - before
        elapsed = end_to_end_seconds(ctx, keys, rows, started)
    finally:
        kill_all(children)
        client.close()
        ctx.clean(keys)

    reports = [reader.report or {} for reader in readers]
    if "cpu_seconds" not in published or any("cpu_seconds" not in report for report in reports):
        raise BenchError("a child reported no cpu_seconds; is it an older bench child?")
    per_row = 1e6 / rows
    return {
        "publisher": published["cpu_seconds"] * per_row,
        f"consumers ({consumers})": sum(report["cpu_seconds"] for report in reports) * per_row,
        "server": server * per_row,
        "rate (tx/s)": rows / elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rpcpu-") as scratch, BenchServer(Path(scratch) / "valkey") as server:
        ctx = BenchContext(url=server.url, scratch=Path(scratch), rows=args.rows, repeat=1, quick=False)
        run = measure_end_to_end if args.end_to_end else measure
        figures = {kit.name: run(kit, ctx, args.rows) for kit in (PlainKit(ctx), ProductKit(ctx))}

    cores = os.cpu_count() or 1
    rates = {kit: values.pop("rate (tx/s)", None) for kit, values in figures.items()}
    method = "end to end, all processes at once" if args.end_to_end else "publish, then drain with one consumer"
    print(f"CPU microseconds per transaction, {args.rows:,} transactions, {method}, {cores} CPUs")
    print(f"{'process':<20}{'plain loop':>12}{'product':>12}{'ratio':>8}")
    for name in figures["plain"]:
        plain, product = figures["plain"][name], figures["product"][name]
        print(f"{name:<20}{plain:>12.1f}{product:>12.1f}{product / plain:>7.1f}x")
    totals = {kit: sum(values.values()) for kit, values in figures.items()}
    print(f"{'total':<20}{totals['plain']:>12.1f}{totals['product']:>12.1f}{totals['product'] / totals['plain']:>7.1f}x")
    print(f"upper bound on {cores} CPUs, end to end: plain {cores * 1e6 / totals['plain']:,.0f}/s, "
          f"product {cores * 1e6 / totals['product']:,.0f}/s")
    if rates["plain"] and rates["product"]:
        print(f"measured end to end: plain {rates['plain']:,.0f}/s, product {rates['product']:,.0f}/s, "
              f"ratio {rates['product'] / rates['plain']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
