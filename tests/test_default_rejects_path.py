"""The default rejects file (FILE.rejects.jsonl in the current directory) is checked before anything is published.

Each input has 1,500 valid rows and then one rejected row, so a command that
found the problem only at the first reject would already have published a
full chunk (1,000 rows) of the file.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import one_server

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
VALID_ROWS = 1500
FIX = "Pass --rejects PATH"


def write_input(path: Path) -> Path:
    rows = "".join(f"d{index},u{index % 7},Whole Foods,groceries,12.00,5411,2026-11-02T10:00:00Z\n"
                   for index in range(VALID_ROWS))
    path.write_text(HEADER + rows + "bad,u1,Whole Foods,groceries,not-an-amount,5411,2026-11-02T10:00:00Z\n")
    return path


def run_in(cwd: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the CLI with ``cwd`` as its current directory."""
    return subprocess.run([sys.executable, "-m", "rewardpilot.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def one_line(text: str) -> str:
    return " ".join(text.split())


def keys_under(sync_client, prefix: str) -> list:
    return list(sync_client.scan_iter(match=f"{prefix}*", count=1000))


@pytest.fixture
def read_only_dir(tmp_path):
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o500)
    if os.access(directory, os.W_OK):
        directory.chmod(0o700)
        pytest.skip("this user (root) can write to a directory with mode 0o500")
    yield directory
    directory.chmod(0o700)


@one_server
@pytest.mark.parametrize("command", ["publish", "run"])
def test_unwritable_cwd_stops_before_publish(cli_env, keys, sync_client, tmp_path, read_only_dir, command):
    source = write_input(tmp_path / "big.csv")

    completed = run_in(read_only_dir, ["--prefix", keys.prefix, command, str(source)], cli_env)

    stderr = one_line(completed.stderr)
    default = str(read_only_dir / "big.csv.rejects.jsonl")
    assert completed.returncode == 2, stderr
    assert f"error: the default rejects file {default!r}" in stderr
    assert f"the directory {str(read_only_dir)!r} is not writable" in stderr
    assert FIX in stderr
    assert "Traceback" not in completed.stderr
    assert keys_under(sync_client, keys.prefix) == []


@one_server
def test_unwritable_cwd_rejects_option_works(cli_env, keys, sync_client, tmp_path, read_only_dir):
    source = write_input(tmp_path / "big.csv")
    rejects = tmp_path / "rejects.jsonl"

    completed = run_in(read_only_dir, ["--prefix", keys.prefix, "publish", str(source), "--rejects", str(rejects)],
                       cli_env)

    assert completed.returncode == 1, completed.stderr[-2000:]
    assert sync_client.xlen(keys.transactions) == VALID_ROWS
    assert len(rejects.read_text().splitlines()) == 1


def test_check_unwritable_cwd_exits_two(tmp_path, monkeypatch, capsys):
    """The same check in-process, so it also runs as root: os.access reports the directory as read-only."""
    import typer

    from rewardpilot.cli.paths import check_rejects_path

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != work)

    with pytest.raises(typer.Exit) as exited:
        check_rejects_path(None, tmp_path / "big.csv")

    stderr = one_line(capsys.readouterr().err)
    assert exited.value.exit_code == 2
    assert f"error: the default rejects file {str(work / 'big.csv.rejects.jsonl')!r}" in stderr
    assert f"the directory {str(work)!r} is not writable" in stderr
    assert FIX in stderr


def test_check_stdin_default_name(tmp_path, monkeypatch, capsys):
    import typer

    from rewardpilot.cli.paths import check_rejects_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "stdin.rejects.jsonl").mkdir()

    with pytest.raises(typer.Exit):
        check_rejects_path(None, Path("-"))

    stderr = one_line(capsys.readouterr().err)
    assert f"the default rejects file {str(tmp_path / 'stdin.rejects.jsonl')!r}: is a directory" in stderr


def test_check_given_path_skips_default(tmp_path, monkeypatch):
    from rewardpilot.cli.paths import check_rejects_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "big.csv.rejects.jsonl").mkdir()  # the default path is unusable, but --rejects replaces it

    check_rejects_path(tmp_path / "given.jsonl", tmp_path / "big.csv")


@one_server
@pytest.mark.parametrize("command", ["publish", "run"])
def test_default_path_is_directory(cli_env, keys, sync_client, tmp_path, command):
    work = tmp_path / "work"
    work.mkdir()
    source = write_input(tmp_path / "big.csv")
    (work / "big.csv.rejects.jsonl").mkdir()

    completed = run_in(work, ["--prefix", keys.prefix, command, str(source)], cli_env)

    stderr = one_line(completed.stderr)
    default = str(work / "big.csv.rejects.jsonl")
    assert completed.returncode == 2, stderr
    assert f"error: the default rejects file {default!r}: is a directory" in stderr
    assert FIX in stderr
    assert keys_under(sync_client, keys.prefix) == []


@one_server
def test_default_path_error_as_json(cli_env, keys, sync_client, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    source = write_input(tmp_path / "big.csv")
    (work / "big.csv.rejects.jsonl").mkdir()

    completed = run_in(work, ["--prefix", keys.prefix, "run", str(source), "--json"], cli_env)

    error = json.loads(completed.stdout)
    assert completed.returncode == 2
    assert error["exit_code"] == 2
    assert error["error"].startswith(f"the default rejects file {str(work / 'big.csv.rejects.jsonl')!r}")
    assert FIX in error["error"]
    assert keys_under(sync_client, keys.prefix) == []


@one_server
def test_deleted_cwd_stops_before_publish(cli_env, keys, sync_client, tmp_path):
    """A current directory removed after the shell entered it has no room for the default rejects file."""
    source = write_input(tmp_path / "big.csv")
    removed_dir = tmp_path / "removed"
    removed_dir.mkdir()
    quoted_dir = shlex.quote(str(removed_dir))
    command = shlex.join([sys.executable, "-m", "rewardpilot.cli", "--prefix", keys.prefix, "publish", str(source)])
    script = f"cd {quoted_dir} && rmdir {quoted_dir} && exec {command}"

    completed = subprocess.run(["sh", "-c", script], env=cli_env, cwd=tmp_path, capture_output=True, text=True,
                               timeout=120)

    stderr = one_line(completed.stderr)
    assert completed.returncode == 2, stderr
    assert "error: the current directory, where the default rejects file goes, cannot be read" in stderr
    assert FIX in stderr
    assert keys_under(sync_client, keys.prefix) == []


@one_server
def test_writable_cwd_gets_default_file(cli_env, keys, sync_client, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    source = write_input(tmp_path / "big.csv")

    completed = run_in(work, ["--prefix", keys.prefix, "publish", str(source)], cli_env)

    assert completed.returncode == 1, completed.stderr[-2000:]
    assert sync_client.xlen(keys.transactions) == VALID_ROWS
    assert len((work / "big.csv.rejects.jsonl").read_text().splitlines()) == 1
