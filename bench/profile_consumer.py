"""Profile the product's consumer path with py-spy and print where its time goes.

    python -m bench.profile_consumer [--rows 60000] [--output consumer.folded]

Starts a private server, publishes ``--rows`` transactions with
``publish_file``, then drains them with one ``ConsumerPool`` process under
``py-spy record`` (folded stacks, 250 samples per second). Prints each
stage's share of the samples taken inside ``ConsumerPool.handle``, the
consumer's work on micro-batches. Needs py-spy (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.context import ROOT, BenchContext, BenchError
from bench.pipeline import ProductKit
from bench.server import BenchServer

# (stage, function name as py-spy prints it); a sample counts once per stage.
STAGES = [
    ("decode entries (pydantic)", "ConsumerPool._decode"),
    ("engine: RulesEngine.evaluate", "RulesEngine.evaluate"),
    ("  rounding rewards (_listed)", "RulesEngine._listed"),
    ("  valuing cards (_valued)", "RulesEngine._valued"),
    ("  purchase context (_context)", "RulesEngine._context"),
    ("  reasoning text", "RulesEngine._reasoning"),
    ("wallet look-up", "WalletCache.resolve"),
    ("stamp results (_collect)", "ConsumerPool._collect"),
    ("settle: Settler.settle", "Settler.settle"),
    ("  result JSON (Evaluation.to_json)", "Evaluation.to_json"),
    ("  command encoding (redis-py)", "HiredisRespSerializer.pack"),
]
HANDLE = "ConsumerPool.handle"
_LOCATION = re.compile(r" \(.*\)$")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Profile the consumer path with py-spy.")
    parser.add_argument("--rows", type=int, default=60_000, help="transactions to drain (default 60,000)")
    parser.add_argument("--output", type=Path, default=Path("consumer.folded"), help="folded stacks file")
    return parser.parse_args(argv)


def record(ctx: BenchContext, py_spy: str, output: Path) -> None:
    keys = ctx.new_keys()
    publisher = ProductKit(ctx).publisher(keys, ctx.csv_file(ctx.rows))
    publisher.wait_ready()
    publisher.go()
    publisher.result(timeout=600)

    command = [
        py_spy, "record", "--format", "raw", "--rate", "250", "--output", str(output), "--",
        sys.executable, "-m", "bench.product_consumer", "--url", ctx.url, "--prefix", keys.prefix,
        "--job", keys.job, "--drain",
    ]
    with (ctx.scratch / "py-spy.log").open("wb") as log:
        child = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=log, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        for line in child.stdout:
            if line.strip() == "ready":
                break
        child.stdin.write("go\n")
        child.stdin.flush()
        child.communicate(timeout=600)
    if child.returncode != 0:
        raise BenchError(f"py-spy record exited with status {child.returncode}; see {ctx.scratch / 'py-spy.log'}")


def shares(folded: Path) -> tuple[int, dict[str, int]]:
    """Return the samples inside ``ConsumerPool.handle`` and, per stage, how many of them include it."""
    inside = 0
    counts: dict[str, int] = collections.Counter()
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = {_LOCATION.sub("", frame) for frame in stack.split(";")}
        if HANDLE not in frames:
            continue
        inside += int(count)
        for stage, function in STAGES:
            if function in frames:
                counts[stage] += int(count)
    return inside, counts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("error: py-spy is not installed; run: pip install py-spy", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="rpprofile-") as scratch, BenchServer(Path(scratch) / "valkey") as server:
        ctx = BenchContext(url=server.url, scratch=Path(scratch), rows=args.rows, repeat=1, quick=False)
        record(ctx, py_spy, args.output.resolve())

    inside, counts = shares(args.output)
    print(f"{inside} samples inside {HANDLE}; folded stacks in {args.output}")
    for stage, _function in STAGES:
        print(f"{100 * counts[stage] / max(inside, 1):5.1f}%  {stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
