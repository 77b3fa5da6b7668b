"""With --json on the command line, a usage error is one JSON object on stdout, as the commands' own errors are."""

from __future__ import annotations

import json
import os

import pytest

from conftest import invoke_cli


def cli_env(tmp_path) -> dict[str, str]:
    # Nothing listens on port 1, so a command that gets past its options fails at once on Redis.
    return {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0", "RP_HOME": str(tmp_path / "home")}


@pytest.mark.parametrize("args, fragment", [
    (["run", "examples.csv", "--json", "--batch-size", "abc"], "'--batch-size'"),
    (["run", "examples.csv", "--json", "--no-such-option"], "No such option: --no-such-option"),
    (["publish", "examples.csv", "--json", "--dedup-window", "soon"], "--dedup-window"),
    (["run", "--json"], "Missing argument"),
])
def test_usage_error_is_json(tmp_path, args, fragment):
    completed = invoke_cli(args, cli_env(tmp_path))

    assert completed.returncode == 2
    assert completed.stderr.startswith("error: ")
    error = json.loads(completed.stdout)
    assert fragment in error["error"]
    assert error["exit_code"] == 2


def test_usage_error_without_json_unchanged(tmp_path):
    completed = invoke_cli(["run", "examples.csv", "--batch-size", "abc"], cli_env(tmp_path))

    assert completed.returncode == 2
    assert completed.stdout == ""
    assert "Invalid value for '--batch-size'" in completed.stderr


def test_json_command_error_kept(tmp_path):
    source = tmp_path / "transactions.csv"
    source.write_text("transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n")

    completed = invoke_cli(["run", str(source), "--json"], cli_env(tmp_path))

    assert completed.returncode == 2
    error = json.loads(completed.stdout.strip().splitlines()[-1])
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in error["error"]
    assert error["exit_code"] == 2
