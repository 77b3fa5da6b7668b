"""``publish`` and ``run`` write no empty lines to stderr, and a duplicate's reason gives the window as the user writes it.

Rich's progress bar prints an empty line when it stops on a console that
is not a terminal, so the bar is off there.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import invoke_cli, one_server, run_cli
from producer.rejects import RejectsWriter

COLUMNS = ["transaction_id", "user_id", "merchant", "category", "amount_usd", "mcc", "timestamp"]


def write_rows(path: Path, count: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for index in range(count):
            writer.writerow([f"s-{index}", "u1", "Whole Foods", "groceries", f"{10 + index}.25", "5411",
                             f"2026-11-01T00:00:{index:02d}Z"])
    return path


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@one_server
def test_publish_json_stderr_empty(cli_env, keys, tmp_path):
    source = write_rows(tmp_path / "few.csv", 3)

    completed = run_cli(["--prefix", keys.prefix, "publish", str(source), "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert json.loads(completed.stdout)["published"] == 3


@one_server
def test_publish_stderr_no_empty_line(cli_env, keys, tmp_path):
    source = write_rows(tmp_path / "few.csv", 3)

    completed = run_cli(["--prefix", keys.prefix, "publish", str(source)], cli_env)

    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.strip(), "publish printed no summary"
    assert "" not in completed.stderr.splitlines()


@one_server
@pytest.mark.parametrize("as_json", [False, True])
def test_run_stderr_no_empty_line(cli_env, keys, tmp_path, as_json):
    source = write_rows(tmp_path / "few.csv", 3)
    args = ["--prefix", keys.prefix, "run", str(source), "--job", "clean"] + (["--json"] if as_json else [])

    completed = run_cli(args, cli_env)

    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.startswith("job clean on "), completed.stderr
    assert "" not in completed.stderr.splitlines()


@pytest.mark.parametrize(("seconds", "text"), [
    (86_400, "24h"), (12 * 3_600, "12h"), (7 * 86_400, "7d"), (90 * 60, "90m"), (45, "45s"), (3_601, "3601s"),
])
def test_duplicate_reason_window(tmp_path, seconds, text):
    with RejectsWriter(tmp_path / "rejects.jsonl") as rejects:
        rejects.duplicate(7, "t1", seconds)

    [record] = read_records(tmp_path / "rejects.jsonl")
    assert record["reason"] == f"transaction_id 't1' was already published in the last {text}"
    assert record["line"] == 7


@one_server
@pytest.mark.parametrize(("window", "text"), [("24h", "24h"), ("90m", "90m"), ("7d", "7d")])
def test_publish_duplicate_reason_window(cli_env, keys, tmp_path, window, text):
    source = write_rows(tmp_path / "twice.csv", 2)
    rejects = tmp_path / "twice.rejects.jsonl"
    args = ["--prefix", keys.prefix, "publish", str(source), "--dedup-window", window, "--rejects", str(rejects)]
    assert invoke_cli(args, cli_env).returncode == 0

    completed = invoke_cli(args, cli_env)

    assert completed.returncode == 0, completed.stderr
    records = read_records(rejects)
    assert [record["outcome"] for record in records] == ["duplicate", "duplicate"]
    assert records[0]["reason"] == f"transaction_id 's-0' was already published in the last {text}"
