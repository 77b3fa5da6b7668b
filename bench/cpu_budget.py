"""CPU time per transaction of each process (publisher, consumer, server), plain loop against product.

    python -m bench.cpu_budget [--rows 100000] [--end-to-end] [--canned]

Runs row 3 (the plain loop) and row 4 (the product) once each as publish,
then drain with one consumer process, against a private server. With
``--end-to-end`` it runs each as row 4's end-to-end measurement instead:
2 consumer processes started first, then the publisher, all at once. Each child
reports the CPU seconds it used between its go and its report
(``time.process_time``, every thread of the process), and the server's
``used_cpu_user + used_cpu_sys`` from INFO is read before and after each
phase. On a machine where every process competes for the same cores, the
end-to-end rate cannot exceed cores / (sum of the three figures), which
the last line prints as an upper bound, not a measurement. ``--canned`` adds
a third column: the product with consumers that take results from
``bench.canned``'s cache, so the engine's share of the product's CPU shows.

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
    parser.add_argument("--canned", action="store_true",
                        help="also run the product with canned results (bench.canned), without the engine's cost")
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
        kits = {"plain loop": PlainKit(ctx), "product": ProductKit(ctx)}
        if args.canned:
            kits["canned"] = ProductKit(ctx, canned=True)
        figures = {name: run(kit, ctx, args.rows) for name, kit in kits.items()}

    cores = os.cpu_count() or 1
    rates = {name: values.pop("rate (tx/s)", None) for name, values in figures.items()}
    totals = {name: sum(values.values()) for name, values in figures.items()}
    others = [name for name in figures if name != "plain loop"]
    method = "end to end, all processes at once" if args.end_to_end else "publish, then drain with one consumer"
    print(f"CPU microseconds per transaction, {args.rows:,} transactions, {method}, {cores} CPUs")
    print(f"{'process':<20}{'plain loop':>12}" + "".join(f"{name:>12}{'ratio':>8}" for name in others))
    for process in figures["plain loop"]:
        plain = figures["plain loop"][process]
        cells = "".join(f"{figures[name][process]:>12.1f}{figures[name][process] / plain:>7.1f}x" for name in others)
        print(f"{process:<20}{plain:>12.1f}{cells}")
    cells = "".join(f"{totals[name]:>12.1f}{totals[name] / totals['plain loop']:>7.1f}x" for name in others)
    print(f"{'total':<20}{totals['plain loop']:>12.1f}{cells}")
    bounds = ", ".join(f"{name} {cores * 1e6 / total:,.0f}/s" for name, total in totals.items())
    print(f"upper bound on {cores} CPUs, end to end: {bounds}")
    if all(rates.values()):
        measured = ", ".join(f"{name} {rate:,.0f}/s" for name, rate in rates.items())
        ratios = ", ".join(f"{name} {rates[name] / rates['plain loop']:.2f}x" for name in others)
        print(f"measured end to end: {measured}; ratio to the plain loop: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
