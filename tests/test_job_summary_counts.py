"""The `rewardpilot run` summary counts each row once, under a name of its own.

Rows read end up published by this run (``input.published``), already
published by an earlier run of the job (``already_published``), rejected,
skipped, or unpublished after a stop. The table shows the same names as the
JSON, each once.
"""

from __future__ import annotations

import json

from conftest import invoke_cli, one_server
from test_cli_trial_fixes import HEADER, write_gas_csv
from consumer.stats import PoolStats
from rewardpilot.job import summarise


def run_job(keys, cli_env, source, job: str, *options):
    return invoke_cli(["--prefix", keys.prefix, "run", str(source), "--job", job, "--keep", "1h", *options], cli_env)


def table_rows(stdout: str) -> dict[str, list[str]]:
    """Return the summary table's values by field, so a field shown twice has two values."""
    rows: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) == 4 and cells[1]:
            rows.setdefault(cells[1], []).append(cells[2])
    return rows


@one_server
def test_first_run_counts_published(keys, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")

    completed = run_job(keys, cli_env, tmp_path / "gas.csv", "c1", "--json")

    summary = json.loads(completed.stdout)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert summary["input"]["published"] == 3
    assert summary["already_published"] == 0
    assert summary["total_transactions"] == 3
    assert "duplicates" not in summary["input"]


@one_server
def test_rerun_counts_already_published_once(keys, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")
    assert run_job(keys, cli_env, tmp_path / "gas.csv", "c2").returncode == 0

    again = run_job(keys, cli_env, tmp_path / "gas.csv", "c2", "--json")

    summary = json.loads(again.stdout)
    assert again.returncode == 0, again.stderr[-2000:]
    assert summary["input"]["published"] == 0
    assert summary["already_published"] == 3
    assert summary["total_transactions"] == 3
    assert summary["consumer"]["duplicates"] == 0  # nothing was delivered, so the pool found no markers
    assert "duplicates" not in summary["input"]


@one_server
def test_rerun_table_shows_each_count_once(keys, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")
    assert run_job(keys, cli_env, tmp_path / "gas.csv", "c3").returncode == 0

    again = run_job(keys, cli_env, tmp_path / "gas.csv", "c3", "--sample", "0")

    rows = table_rows(again.stdout)
    assert again.returncode == 0, again.stderr[-2000:]
    assert rows["already_published"] == ["3"], again.stdout
    assert rows["published"] == ["0"], again.stdout
    assert rows["total_transactions"] == ["3"], again.stdout
    assert "duplicates" not in rows, again.stdout
    assert all(len(values) == 1 for values in rows.values()), again.stdout


@one_server
def test_input_counts_add_up(keys, cli_env, tmp_path):
    """Every row read is counted in exactly one of the outcomes."""
    source = tmp_path / "mixed.csv"
    source.write_text("\n".join([
        HEADER,
        "m0,u1,SHELL OIL 5744,gas,10.00,5541,2026-11-10T13:00:00Z",
        "m1,u1,SHELL OIL 5744,gas,-11.00,5541,2026-11-10T13:00:00Z",  # a refund: skipped
        "m2,u1,SHELL OIL 5744,gas,abc,5541,2026-11-10T13:00:00Z",  # an invalid amount: rejected
        "m3,u1,SHELL OIL 5744,gas,13.00,5541,2026-11-10T13:00:00Z",
    ]) + "\n", encoding="utf-8")
    first = source.with_name("first.csv")
    first.write_text("\n".join(source.read_text().splitlines()[:2]) + "\n", encoding="utf-8")
    assert run_job(keys, cli_env, first, "c4").returncode == 0

    completed = run_job(keys, cli_env, source, "c4", "--json")

    summary = json.loads(completed.stdout)
    counts = summary["input"]
    assert completed.returncode == 1, completed.stderr[-2000:]  # 1 because of the rejected row
    assert counts["rows_read"] == 4
    assert counts["published"] == 1
    assert summary["already_published"] == 1
    assert counts["rejected"] == 1
    assert counts["skipped"] == 1
    outcomes = counts["published"] + summary["already_published"] + counts["rejected"] + counts["skipped"]
    assert outcomes == counts["rows_read"]
    assert summary["total_transactions"] == counts["published"] + summary["already_published"]


def test_summarise_keys_named_once():
    stats = PoolStats(results=2, duplicates=1)

    summary = summarise("job-1", 2, stats, publish_seconds=0.0, consume_seconds=1.0, wall_seconds=1.0,
                        already_published=3)
    fields = summary.as_dict()

    assert fields["already_published"] == 3
    assert fields["total_transactions"] == 5
    assert fields["successful"] == 2
    assert fields["already_processed"] == 0
    assert "duplicates" not in fields
    assert fields["consumer"]["duplicates"] == 1
