"""Run the benchmark and print one table: ``python -m bench.run`` (``make bench``).

    python -m bench.run                 # every row, 3 repetitions, 200,000 transactions
    python -m bench.run --quick         # small sizes, 1 repetition: a smoke test
    python -m bench.run --only 1,3,4    # some rows only

Every row measures the same private Valkey server, started for the run on
127.0.0.1 with persistence off and stopped at the end. Results go to
``bench/results/<UTC timestamp>.json`` and ``bench/results/latest.json``.
Exit status: 0 when every selected row ran, 1 when any row failed, 2 on
invalid options.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from bench import baseline_redis, http_path, latency, machine, memory, peer_dramatiq, plain_loop, product, report
from bench.context import BenchContext, BenchError
from bench.server import BenchServer, BenchServerError
from bench.stats import RowResult

ROWS = {
    1: baseline_redis.measure,
    2: peer_dramatiq.measure,
    3: plain_loop.measure,
    4: product.measure,
    5: latency.measure,
    6: http_path.measure,
    7: memory.measure,
}
DEFAULT_ROWS = 200_000
QUICK_ROWS = 5_000
MIN_ROWS = 1_000
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_only(text: str) -> list[int]:
    """Parse ``--only`` such as ``3`` or ``1,3,4`` into sorted row numbers."""
    numbers = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) not in ROWS:
            raise argparse.ArgumentTypeError(
                f"row {part!r} is invalid; use numbers 1 to {max(ROWS)} separated by commas, like 1,3,4"
            )
        numbers.add(int(part))
    return sorted(numbers)


def at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum of {minimum}")
        return value

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"small sizes ({QUICK_ROWS:,} transactions) and 1 repetition, for a smoke test")
    parser.add_argument("--repeat", type=at_least(1), default=None,
                        help="repetitions per figure; the table shows their median (default 3, or 1 with --quick)")
    parser.add_argument("--rows", type=at_least(MIN_ROWS), default=None,
                        help=f"transactions per measurement in rows 1, 3 and 4 (default {DEFAULT_ROWS:,})")
    parser.add_argument("--only", type=parse_only, default=sorted(ROWS),
                        help="rows to run, comma-separated, like 1,3,4 (default: all)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="folder for the JSON results (default bench/results)")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.rows is None:
        args.rows = QUICK_ROWS if args.quick else DEFAULT_ROWS
    return args


def measure_rows(ctx: BenchContext, numbers: list[int], console: Console) -> list[RowResult]:
    """Measure each selected row; a row that fails is recorded as failed and the others still run."""
    results = []
    for number in numbers:
        console.print(f"[dim]row {number}: measuring...[/dim]")
        started = time.monotonic()
        try:
            row = ROWS[number](ctx)
        except BenchError as exc:
            row = RowResult(number, ROWS[number].__module__.rsplit(".", 1)[-1], status=f"failed: {exc}")
            console.print(f"[red]row {number} failed:[/red] {exc}")
        finally:
            ctx.clean()
        console.print(f"[dim]row {number}: {time.monotonic() - started:.0f} s[/dim]")
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)  # a log file or pipe keeps the table on one line per figure
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    with tempfile.TemporaryDirectory(prefix="rpbench-") as scratch:
        try:
            server = BenchServer(Path(scratch) / "valkey").start()
        except BenchServerError as exc:
            console.print(f"[red]error:[/red] {exc}")
            return 1
        try:
            ctx = BenchContext(url=server.url, scratch=Path(scratch), rows=args.rows,
                               repeat=args.repeat, quick=args.quick)
            client = ctx.client()
            described = machine.describe(client)
            client.close()
            rows = measure_rows(ctx, args.only, console)
        finally:
            server.stop()

    report.add_ratios(rows)
    targets = report.check_targets(rows)
    report.print_report(rows, described, targets, console)

    document = {
        "started_at": stamp,
        "machine": described,
        "options": {"quick": args.quick, "repeat": args.repeat, "rows": args.rows, "only": args.only},
        "rows": [row.as_dict() for row in rows],
        "targets": targets,
    }
    path = report.write_json(args.results_dir, stamp, document)
    console.print(f"results written to {path}")
    return 0 if all(row.status == "ok" or row.status.startswith("not available") for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
