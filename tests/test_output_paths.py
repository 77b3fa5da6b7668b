"""Options that name a file to write are checked before a command publishes or reads anything."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import ROOT, invoke_cli, one_server
from rewardpilot.cli.paths import RESULT_SUFFIXES, OutputPathError, validate_output_path

EXAMPLE = ROOT / "examples" / "transactions.csv"


def one_line(text: str) -> str:
    """Join the lines rich wrapped at the console width, so a message can be matched whole."""
    return " ".join(text.split())


def write_one_row(path: Path) -> Path:
    lines = EXAMPLE.read_text().splitlines()[:2]
    path.write_text("\n".join(lines) + "\n")
    return path


def keys_under(sync_client, prefix: str) -> list:
    return list(sync_client.scan_iter(match=f"{prefix}*", count=1000))


# validate_output_path

def test_validate_accepts_new_file(tmp_path):
    validate_output_path(tmp_path / "out.csv", "--output", suffixes=RESULT_SUFFIXES)


def test_validate_accepts_suffix_any_case(tmp_path):
    validate_output_path(tmp_path / "OUT.CSV", "--output", suffixes=RESULT_SUFFIXES)
    validate_output_path(tmp_path / "out.JSONL", "--output", suffixes=RESULT_SUFFIXES)


def test_validate_missing_directory(tmp_path):
    path = tmp_path / "missing" / "out.csv"

    with pytest.raises(OutputPathError) as raised:
        validate_output_path(path, "--output")

    message = str(raised.value)
    assert message.startswith(f"--output {str(path)!r}: ")
    assert f"the directory {str(path.parent)!r} does not exist" in message
    assert message.endswith("create it or choose another path")


def test_validate_parent_is_file(tmp_path):
    (tmp_path / "plain").write_text("")

    with pytest.raises(OutputPathError) as raised:
        validate_output_path(tmp_path / "plain" / "out.csv", "--output")

    assert "is a file, not a directory" in str(raised.value)


def test_validate_path_is_directory(tmp_path):
    with pytest.raises(OutputPathError) as raised:
        validate_output_path(tmp_path, "--html")

    assert "is a directory" in str(raised.value)


@pytest.mark.parametrize("name", ["out.txt", "out.json", "out", "out.csv.gz"])
def test_validate_other_suffix_rejected(tmp_path, name):
    with pytest.raises(OutputPathError) as raised:
        validate_output_path(tmp_path / name, "--output", suffixes=RESULT_SUFFIXES)

    message = str(raised.value)
    assert repr(str(tmp_path / name)) in message
    assert ".csv (CSV)" in message
    assert ".jsonl (JSON lines)" in message


def test_validate_directory_not_writable(tmp_path, monkeypatch):
    # Tests may run as root, and root can write whatever the permission bits are, so os.access is replaced.
    directory = tmp_path / "read-only"
    directory.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != directory)

    with pytest.raises(OutputPathError) as raised:
        validate_output_path(directory / "r.jsonl", "--rejects")

    message = str(raised.value)
    assert f"the directory {str(directory)!r} is not writable" in message
    assert message.startswith("--rejects ")


def test_validate_file_not_writable(tmp_path, monkeypatch):
    path = tmp_path / "r.html"
    path.write_text("old")
    monkeypatch.setattr(os, "access", lambda checked, mode: Path(checked) != path)

    with pytest.raises(OutputPathError) as raised:
        validate_output_path(path, "--html")

    assert "the file exists and is not writable" in str(raised.value)


def test_validate_same_as_input(tmp_path):
    source = write_one_row(tmp_path / "in.csv")

    with pytest.raises(OutputPathError) as raised:
        validate_output_path(tmp_path / "." / "in.csv", "--rejects", input_path=source)

    assert "is the input file" in str(raised.value)


def test_validate_dangling_link_target(tmp_path):
    link = tmp_path / "out.csv"
    link.symlink_to(tmp_path / "gone" / "out.csv")

    with pytest.raises(OutputPathError) as raised:
        validate_output_path(link, "--output", suffixes=RESULT_SUFFIXES)

    assert f"the directory {str(tmp_path / 'gone')!r} does not exist" in str(raised.value)


def test_validate_link_loop(tmp_path):
    (tmp_path / "a.csv").symlink_to(tmp_path / "b.csv")
    (tmp_path / "b.csv").symlink_to(tmp_path / "a.csv")

    with pytest.raises(OutputPathError) as raised:
        validate_output_path(tmp_path / "a.csv", "--output", suffixes=RESULT_SUFFIXES)

    assert "the path cannot be checked" in str(raised.value)


# The commands

@one_server
def test_run_output_missing_directory(cli_env, keys, sync_client, tmp_path):
    source = write_one_row(tmp_path / "one.csv")
    output = tmp_path / "missing" / "out.csv"

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--output", str(output)], cli_env)
    stderr = one_line(completed.stderr)

    assert completed.returncode == 2
    assert (f"error: --output {str(output)!r}: the directory {str(output.parent)!r} does not exist; "
            "create it or choose another path") in stderr
    assert "Traceback" not in completed.stderr
    assert keys_under(sync_client, keys.prefix) == []  # nothing was published


@one_server
def test_run_output_other_suffix(cli_env, keys, sync_client, tmp_path):
    source = write_one_row(tmp_path / "one.csv")

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--output", "out.txt"], cli_env)
    stderr = one_line(completed.stderr)

    assert completed.returncode == 2
    assert "--output 'out.txt': the file name must end in .csv (CSV) or .jsonl (JSON lines)" in stderr
    assert not (tmp_path / "out.txt").exists()
    assert keys_under(sync_client, keys.prefix) == []


@one_server
def test_run_rejects_missing_directory(cli_env, keys, sync_client, tmp_path):
    source = write_one_row(tmp_path / "one.csv")
    rejects = tmp_path / "missing" / "r.jsonl"

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--rejects", str(rejects)], cli_env)

    assert completed.returncode == 2
    assert f"error: --rejects {str(rejects)!r}: the directory" in one_line(completed.stderr)
    assert keys_under(sync_client, keys.prefix) == []


@one_server
def test_run_rejects_is_input(cli_env, keys, sync_client, tmp_path):
    source = write_one_row(tmp_path / "one.csv")
    before = source.read_text()

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--rejects", str(source)], cli_env)

    assert completed.returncode == 2
    assert "is the input file" in one_line(completed.stderr)
    assert source.read_text() == before
    assert keys_under(sync_client, keys.prefix) == []


@one_server
def test_run_output_write_fails_late(cli_env, keys, tmp_path):
    """A write that fails after the checks passed (here a full device) still prints the summary, then exits 2."""
    source = write_one_row(tmp_path / "one.csv")
    output = tmp_path / "out.jsonl"
    output.symlink_to("/dev/full")

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--output", str(output)], cli_env)
    stderr = one_line(completed.stderr)

    assert completed.returncode == 2
    assert f"error: --output {str(output)!r}: the results could not be written" in stderr
    assert "subscribe --job" in stderr
    assert "Traceback" not in completed.stderr
    assert "successful" in completed.stdout  # the summary table


@one_server
def test_publish_rejects_missing_directory(cli_env, keys, sync_client, tmp_path):
    source = write_one_row(tmp_path / "one.csv")
    rejects = tmp_path / "missing" / "r.jsonl"

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(source), "--rejects", str(rejects)], cli_env)

    assert completed.returncode == 2
    assert (f"error: --rejects {str(rejects)!r}: the directory {str(rejects.parent)!r} does not exist"
            in one_line(completed.stderr))
    assert keys_under(sync_client, keys.prefix) == []


@one_server
def test_publish_json_rejects_error(cli_env, keys, sync_client, tmp_path):
    source = write_one_row(tmp_path / "one.csv")
    rejects = tmp_path / "missing" / "r.jsonl"

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(source), "--json", "--rejects", str(rejects)],
                           cli_env)
    error = json.loads(completed.stdout)

    assert completed.returncode == 2
    assert error["exit_code"] == 2
    assert error["error"].startswith(f"--rejects {str(rejects)!r}: the directory")
    assert keys_under(sync_client, keys.prefix) == []


@one_server
@pytest.mark.parametrize("option, name", [("--html", "r.html"), ("--png", "r.png")])
def test_report_file_missing_directory(cli_env, keys, tmp_path, option, name):
    target = tmp_path / "missing" / name

    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "u1", "--month", "2026-11",
                            option, str(target)], cli_env)

    assert completed.returncode == 2
    assert f"error: {option} {str(target)!r}: the directory" in one_line(completed.stderr)
    assert "Traceback" not in completed.stderr
    assert completed.stdout == ""  # stopped before the report


@one_server
def test_report_html_write_fails_late(cli_env, keys, tmp_path):
    target = tmp_path / "r.html"
    target.symlink_to("/dev/full")

    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "u1", "--month", "2026-11",
                            "--html", str(target)], cli_env)

    assert completed.returncode == 2
    assert f"error: --html {str(target)!r}: could not write the file" in one_line(completed.stderr)
    assert "Traceback" not in completed.stderr


@one_server
def test_report_png_other_suffix(cli_env, keys, tmp_path):
    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "u1", "--month", "2026-11",
                            "--png", str(tmp_path / "chart.svg")], cli_env)

    assert completed.returncode == 2
    assert "the file name must end in .png (PNG)" in one_line(completed.stderr)
    assert not (tmp_path / "chart.svg").exists()
