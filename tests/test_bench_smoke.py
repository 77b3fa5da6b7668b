"""The benchmark harness: a quick row 3 run end to end, and its option and figure guards.

The run test starts ``python -m bench.run``, which starts its own private
Valkey server on 127.0.0.1, so it needs no fixture server. It checks the
JSON the run writes, never how fast anything was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # bench/ is not an installed package

from bench import report  # noqa: E402
from bench.run import parse_only  # noqa: E402
from bench.stats import RowResult, percentile  # noqa: E402

PLAIN_KEYS = {"plain.publish", "plain.consume.1", "plain.e2e.1", "plain.consume.2", "plain.e2e.2"}
MACHINE_KEYS = {"cpu_model", "nproc", "memory_total_mb", "python", "server", "server_version"}


def run_bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.run", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.slow
def test_quick_plain_loop_writes_json(tmp_path):
    completed = run_bench("--quick", "--only", "3", "--rows", "2000", "--results-dir", str(tmp_path))

    assert completed.returncode == 0, completed.stdout + completed.stderr
    written = sorted(path.name for path in tmp_path.glob("*.json"))
    assert len(written) == 2
    assert "latest.json" in written
    stamped = next(path for path in tmp_path.glob("*.json") if path.name != "latest.json")
    assert stamped.read_text() == (tmp_path / "latest.json").read_text()

    document = json.loads(stamped.read_text())
    assert MACHINE_KEYS <= set(document["machine"])
    assert document["machine"]["nproc"] >= 1
    assert document["options"] == {"quick": True, "repeat": 1, "rows": 2000, "only": [3]}
    assert [row["row"] for row in document["rows"]] == [3]

    row = document["rows"][0]
    assert row["status"] == "ok"
    assert {figure["key"] for figure in row["figures"]} == PLAIN_KEYS
    for figure in row["figures"]:
        # Publish is measured before each consume run, once per consumer count.
        expected_runs = 2 if figure["key"] == "plain.publish" else 1
        assert figure["unit"] == "tx/s"
        assert len(figure["runs"]) == expected_runs
        assert min(figure["runs"]) > 0
        assert figure["median"] == sum(figure["runs"]) / expected_runs
        assert figure["ratios"]["1"] is None  # row 1 was not run
    assert f"results written to {stamped}" in completed.stdout.replace("\n", "")


def test_only_rejects_unknown_row(tmp_path):
    completed = run_bench("--only", "3,9", "--results-dir", str(tmp_path), timeout=60)

    assert completed.returncode == 2
    assert "'9'" in completed.stderr
    assert "1 to 7" in completed.stderr
    assert not list(tmp_path.glob("*.json"))


def test_repeat_zero_rejected(tmp_path):
    completed = run_bench("--repeat", "0", "--results-dir", str(tmp_path), timeout=60)

    assert completed.returncode == 2
    assert "below the minimum of 1" in completed.stderr


def test_parse_only_sorts_and_dedups():
    assert parse_only("4, 1,4") == [1, 4]


@pytest.mark.parametrize(("fraction", "expected"), [(0.50, 50), (0.95, 95), (0.99, 99), (1.0, 100), (0.001, 1)])
def test_percentile_nearest_rank(fraction, expected):
    # Nearest rank over 1..100: the p-th percentile is the value ceil(p * 100).
    assert percentile([float(value) for value in range(1, 101)], fraction) == expected


def test_percentile_of_three_values():
    # ceil(0.5 * 3) is the 2nd value, and ceil(0.99 * 3) the 3rd.
    assert percentile([2.0, 7.0, 40.0], 0.50) == 7.0
    assert percentile([2.0, 7.0, 40.0], 0.99) == 40.0


def test_percentile_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        percentile([], 0.5)


def test_targets_held_and_missed():
    rows = [RowResult(3, "plain"), RowResult(4, "product"), RowResult(5, "latency")]
    rows[0].figure("plain.e2e.2", "e2e", "tx/s").runs.extend([80_000.0, 90_000.0, 100_000.0])
    rows[1].figure("product.e2e.2", "e2e", "tx/s", reference="plain.e2e.2").runs.extend([40_000.0, 50_000.0, 44_000.0])
    rows[2].figure("latency.p50", "p50", "ms").runs.extend([4.0, 6.0, 5.5])

    checks = {check["target"]: check for check in report.check_targets(rows)}
    against_plain = checks["end to end, 2 processes >= 50% of the plain loop's"]
    against_dramatiq = checks["end to end, 2 processes >= 10x dramatiq"]

    # Product median 44,000 against half of the plain median 90,000: 45,000, so missed.
    assert against_plain["bound"] == 45_000.0
    assert against_plain["held"] is False
    assert against_dramatiq["held"] is None  # row 2 was not measured
    # Latency median 5.5 ms against at most 5 ms: missed.
    assert checks["latency p50 <= 5 ms at 2,000 tx/s"]["held"] is False
    assert checks["latency p99 <= 20 ms at 2,000 tx/s"]["held"] is None


def test_ratios_use_row_three_reference():
    rows = [RowResult(3, "plain"), RowResult(4, "product")]
    rows[0].figure("plain.publish", "publish", "tx/s").runs.append(100_000.0)
    rows[1].figure("product.publish", "publish", "tx/s", reference="plain.publish").runs.append(25_000.0)

    report.add_ratios(rows)

    assert rows[1].figures[0].ratios["3"] == 0.25
    assert rows[1].figures[0].ratios["1"] is None


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["--end-to-end"], ["--end-to-end", "--canned"]])
def test_cpu_budget_prints_every_process(mode):
    completed = subprocess.run(
        [sys.executable, "-m", "bench.cpu_budget", "--rows", "1500", *mode],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    names = [line.split("  ")[0] for line in lines[2:-1]]
    assert "publisher" in names
    assert "total" in names
    if mode:
        assert "consumers (2)" in names
        assert "server" in names
        assert lines[-1].startswith("measured end to end: plain ")
    else:
        assert "consumer" in names
        assert "server (consume)" in names
        assert lines[-1].startswith("upper bound on ")
    if "--canned" in mode:
        assert lines[1].split()[-2:] == ["canned", "ratio"]
        assert "canned" in lines[-1]


def test_settle_cost_prints_four_ways():
    completed = subprocess.run(
        [sys.executable, "-m", "bench.settle_cost", "--results", "1500"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].startswith("server CPU microseconds per result, 1,500 results")
    names = [line[:32].strip() for line in lines[1:]]
    assert names == ["plain", "plain with markers", "settle script", "settle script without markers"]
    for line in lines[1:]:
        assert len(line[32:].split()) == 2
