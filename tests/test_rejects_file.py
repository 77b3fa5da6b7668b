"""The rejects file only ever has the rows of the latest publish, and replacing an earlier one is announced."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from conftest import invoke_cli, one_server
from producer import InputError, Producer, publish_file
from producer.rejects import RejectsWriter

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp"
NOTICE = "replacing the rejects file of an earlier publish"


def write_rows(path: Path, *rows: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def good(transaction_id: str) -> str:
    return f"{transaction_id},u1,Shell,gas,40.00,5541,2026-11-02T10:00:00Z"


def bad(transaction_id: str) -> str:
    return f"{transaction_id},u1,Shell,gas,forty,5541,2026-11-02T10:00:00Z"


def publish(client, keys, source: Path, rejects: Path | None = None):
    """Publish ``source`` without the duplicate check; return the summary and what the console printed."""
    output = io.StringIO()
    summary = publish_file(client, keys, source, progress=False, rejects_path=rejects,
                           producer=Producer(client, keys, max_backlog=None, dedup_window_seconds=0),
                           console=Console(file=output, width=200, emoji=False))
    return summary, output.getvalue()


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# RejectsWriter.remove_earlier

def test_remove_earlier_without_file(tmp_path):
    notices = []

    removed = RejectsWriter(tmp_path / "r.jsonl").remove_earlier(notices.append)

    assert removed is False
    assert notices == []


def test_remove_earlier_announces_first(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"outcome": "rejected"}\n')
    seen_while_announcing = []

    removed = RejectsWriter(path).remove_earlier(lambda notice: seen_while_announcing.append((notice, path.exists())))

    assert removed is True
    assert seen_while_announcing == [(f"{NOTICE}: {path}", True)]
    assert not path.exists()


def test_remove_earlier_keeps_own_records(tmp_path):
    path = tmp_path / "r.jsonl"
    writer = RejectsWriter(path)
    writer.write({"outcome": "rejected"})

    removed = writer.remove_earlier(lambda notice: None)
    writer.close()

    assert removed is False
    assert len(records(path)) == 1


# publish_file

def test_fixed_file_leaves_no_rejects(sync_client, keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = write_rows(tmp_path / "f.csv", good("a1"), bad("a2"))
    first, _ = publish(sync_client, keys, source)
    assert first.rejects_path == "f.csv.rejects.jsonl"

    write_rows(source, good("a1"), good("a2"))
    second, printed = publish(sync_client, keys, source)

    assert second.rejected == 0
    assert second.rejects_path is None
    assert f"{NOTICE}: f.csv.rejects.jsonl" in printed
    assert not (tmp_path / "f.csv.rejects.jsonl").exists()


def test_same_name_other_folder(sync_client, keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    publish(sync_client, keys, write_rows(tmp_path / "a" / "s.csv", bad("a1")))

    summary, printed = publish(sync_client, keys, write_rows(tmp_path / "b" / "s.csv", bad("b1")))

    assert f"{NOTICE}: s.csv.rejects.jsonl" in printed
    assert summary.rejects_path == "s.csv.rejects.jsonl"
    assert [record["transaction_id"] for record in records(tmp_path / "s.csv.rejects.jsonl")] == ["b1"]


def test_first_publish_prints_no_notice(sync_client, keys, tmp_path):
    rejects = tmp_path / "r.jsonl"

    summary, printed = publish(sync_client, keys, write_rows(tmp_path / "f.csv", bad("a1")), rejects)

    assert summary.rejected == 1
    assert NOTICE not in printed
    assert len(records(rejects)) == 1


def test_skipped_rows_replace_earlier(sync_client, keys, tmp_path):
    rejects = tmp_path / "r.jsonl"
    publish(sync_client, keys, write_rows(tmp_path / "f.csv", bad("a1")), rejects)

    refund = "a2,u1,Shell,gas,-40.00,5541,2026-11-02T10:00:00Z"
    summary, printed = publish(sync_client, keys, write_rows(tmp_path / "f.csv", refund), rejects)

    assert summary.skipped == 1
    assert NOTICE in printed
    assert [record["outcome"] for record in records(rejects)] == ["skipped"]


def test_unreadable_input_keeps_earlier(sync_client, keys, tmp_path):
    rejects = tmp_path / "r.jsonl"
    rejects.write_text('{"outcome": "rejected"}\n')
    empty = tmp_path / "empty.csv"
    empty.write_text("")

    with pytest.raises(InputError):
        publish(sync_client, keys, empty, rejects)

    assert rejects.read_text() == '{"outcome": "rejected"}\n'


# The commands

@one_server
def test_cli_publish_fixed_file(cli_env, keys, tmp_path):
    source = write_rows(tmp_path / "f.csv", good("c1"), bad("c2"))
    first = invoke_cli(["--prefix", keys.prefix, "publish", str(source), "--dedup-window", "0"], cli_env)
    assert first.returncode == 1, first.stderr[-2000:]
    assert (tmp_path / "f.csv.rejects.jsonl").exists()

    write_rows(source, good("c1"), good("c2"))
    second = invoke_cli(["--prefix", keys.prefix, "publish", str(source), "--dedup-window", "0"], cli_env)

    assert second.returncode == 0, second.stderr[-2000:]
    assert f"{NOTICE}: f.csv.rejects.jsonl" in second.stderr
    assert not (tmp_path / "f.csv.rejects.jsonl").exists()


@one_server
def test_cli_run_names_rejects_file(cli_env, keys, tmp_path):
    source = write_rows(tmp_path / "f.csv", good("d1"), bad("d2"))

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--json"], cli_env)
    summary = json.loads(completed.stdout.strip().splitlines()[-1])

    assert completed.returncode == 1, completed.stderr[-2000:]
    assert summary["input"]["rejects_file"] == "f.csv.rejects.jsonl"
    assert [record["transaction_id"] for record in records(tmp_path / "f.csv.rejects.jsonl")] == ["d2"]


@one_server
def test_cli_run_clean_file_no_rejects(cli_env, keys, tmp_path):
    (tmp_path / "f.csv.rejects.jsonl").write_text('{"outcome": "rejected"}\n')
    source = write_rows(tmp_path / "f.csv", good("e1"))

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--sample", "0"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"{NOTICE}: f.csv.rejects.jsonl" in completed.stderr
    assert not (tmp_path / "f.csv.rejects.jsonl").exists()
    assert "rejects_file" not in completed.stdout  # the summary table shows the row only when a file was written


@one_server
def test_cli_run_table_rejects_file(cli_env, keys, tmp_path):
    source = write_rows(tmp_path / "f.csv", good("g1"), bad("g2"))

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--sample", "0"], cli_env)

    assert completed.returncode == 1, completed.stderr[-2000:]
    row = next(line for line in completed.stdout.splitlines() if "rejects_file" in line)
    assert "f.csv.rejects.jsonl" in row
