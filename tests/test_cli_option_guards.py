"""CLI options that crashed with a traceback on extreme or empty values now exit 2 with an ``error:`` message.

Each case checks the exit status, that the message names the value (and the
option where the command prints it), and that no traceback reaches stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, invoke_cli, one_server
from producer import ProducerError
from producer.rejects import RejectsFileError, RejectsWriter
from rewardpilot.retention import MAX_AGE_DAYS, InvalidAgeError, parse_age

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp"
HUGE_AGE = "99999999999d"


def flat(text: str) -> str:
    """Join the lines of a message that the console wrapped."""
    return " ".join(text.split())


def wide(env: dict[str, str]) -> dict[str, str]:
    """Return ``env`` with a wide console, so messages wrap less."""
    return {**env, "COLUMNS": "200"}


def assert_usage_error(completed, *fragments: str) -> None:
    output = flat(completed.stdout + completed.stderr)
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    for fragment in fragments:
        assert fragment in output


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def good_row(index: int) -> str:
    return f"g{index},u1,KROGER #512,groceries,12.00,5411,2026-05-04T16:00:00Z"


# Ages above the maximum


def test_parse_age_max_accepted():
    assert parse_age(f"{MAX_AGE_DAYS}d").days == MAX_AGE_DAYS


@pytest.mark.parametrize("text", [f"{MAX_AGE_DAYS + 1}d", "5215w", HUGE_AGE, "9" * 5000 + "s"])
def test_parse_age_too_long(text):
    with pytest.raises(InvalidAgeError) as raised:
        parse_age(text)

    assert repr(text) in str(raised.value)
    assert f"the maximum is {MAX_AGE_DAYS}d" in str(raised.value)


@one_server
@pytest.mark.parametrize("command, option", [
    (["publish", "small.csv", "--dedup-window", HUGE_AGE], "--dedup-window"),
    (["run", "small.csv", "--keep", HUGE_AGE], "--keep"),
    (["trim", "--older-than", HUGE_AGE], None),
    (["consume", "--drain", "--marker-ttl", HUGE_AGE], "--marker-ttl"),
    (["consume", "--drain", "--trim-older-than", HUGE_AGE], "--trim-older-than"),
])
def test_huge_age_exit_two(cli_env, keys, tmp_path, command, option):
    write_csv(tmp_path / "small.csv", [good_row(1)])

    completed = invoke_cli(["--prefix", keys.prefix, *command], wide(cli_env))

    # NOTE: trim prints the age error without the option's name, because trim_cmd adds none.
    assert_usage_error(completed, f"age '{HUGE_AGE}' is too long", f"the maximum is {MAX_AGE_DAYS}d")
    if option is not None:
        assert f"{option}: age" in flat(completed.stdout + completed.stderr)


# consume: --run, seconds options, --name, --rate


@one_server
@pytest.mark.parametrize("run", ["a:b", ""])
def test_consume_invalid_run_exit_two(cli_env, keys, run):
    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100", "--run", run],
                           wide(cli_env))

    assert_usage_error(completed, f"--run {run!r} is invalid", "letters, digits")


@one_server
@pytest.mark.parametrize("option, value", [
    ("--visibility-timeout", "inf"), ("--visibility-timeout", "1e308"), ("--lease", "inf"), ("--grace", "inf"),
    ("--breaker-cooldown", "inf"), ("--timeout", "inf"), ("--startup-timeout", "inf"),
])
def test_consume_infinite_seconds_exit_two(cli_env, keys, option, value):
    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100", option, value],
                           wide(cli_env))

    assert_usage_error(completed, f"{option} {float(value)} is invalid", "finite number of seconds")


@one_server
@pytest.mark.parametrize("option", ["--grace", "--lease"])
def test_consume_nan_seconds_exit_two(cli_env, keys, option):
    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100", option, "nan"],
                           wide(cli_env))

    # Typer's minimum check rejects NaN before the command runs, with its own message.
    assert_usage_error(completed, option)


@one_server
@pytest.mark.parametrize("name", ["", "  "])
def test_consume_empty_name_exit_two(cli_env, keys, name):
    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100", "--name", name],
                           wide(cli_env))

    assert_usage_error(completed, "--name '", "is empty; give a consumer name")


@one_server
def test_consume_bad_rate_no_warning(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100", "--rate", "abc"],
                           wide(cli_env))

    assert_usage_error(completed, "--rate: invalid rate 'abc'")
    assert "warning" not in completed.stderr


def test_consume_help_exit_statuses(tmp_path):
    from test_cli_imports import child_env

    completed = invoke_cli(["consume", "--help"], child_env(tmp_path, columns=200))

    output = flat(completed.stdout)
    assert completed.returncode == 0
    assert "Exit status" in output
    assert "128+N" in output


# status --watch --interval


@one_server
@pytest.mark.parametrize("value", ["nan", "inf", "1e308"])
def test_status_interval_not_finite(cli_env, keys, value):
    completed = invoke_cli(["--prefix", keys.prefix, "status", "--watch", "--count", "2", "--interval", value],
                           wide(cli_env))

    assert_usage_error(completed, f"--interval {float(value)} must be a positive, finite number of seconds")


# wallet


@one_server
def test_wallet_delete_empty_user(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "wallet", "delete", ""], wide(cli_env))

    assert_usage_error(completed, "user id is empty")


@one_server
@pytest.mark.parametrize("extra", [["--json"], []])
def test_wallet_show_empty_user(cli_env, keys, extra):
    stored = invoke_cli(["--prefix", keys.prefix, "wallet", "set", "u-listed", "amex-gold"], wide(cli_env))
    assert stored.returncode == 0, stored.stderr[-2000:]

    completed = invoke_cli(["--prefix", keys.prefix, "wallet", "show", "", *extra], wide(cli_env))

    assert_usage_error(completed, "user id is empty")
    assert "u-listed" not in completed.stdout


@one_server
@pytest.mark.parametrize("quarter", ["0000Q1", "1899Q4"])
def test_wallet_activate_ancient_quarter(cli_env, keys, quarter):
    stored = invoke_cli(["--prefix", keys.prefix, "wallet", "set", "u2", "chase-freedom-flex"], wide(cli_env))
    assert stored.returncode == 0, stored.stderr[-2000:]

    completed = invoke_cli(["--prefix", keys.prefix, "wallet", "activate", "u2", "chase-freedom-flex", quarter],
                           wide(cli_env))

    assert_usage_error(completed, f"quarter {quarter!r} is invalid", "before 1900")
    shown = invoke_cli(["--prefix", keys.prefix, "wallet", "show", "u2", "--json", "--with-settings"], wide(cli_env))
    assert json.loads(shown.stdout)["u2"]["activations"] == {}


# dlq redrive ids


@one_server
@pytest.mark.parametrize("entry_id", ["99999999999999999999999-0", "1-18446744073709551616", "18446744073709551616"])
def test_dlq_redrive_id_too_large(cli_env, keys, entry_id):
    completed = invoke_cli(["--prefix", keys.prefix, "dlq", "redrive", entry_id], wide(cli_env))

    assert_usage_error(completed, f"{entry_id!r}: not a stream entry id", "18446744073709551615")


@one_server
def test_dlq_redrive_id_max_accepted(cli_env, keys):
    entry_id = "18446744073709551615-18446744073709551615"

    completed = invoke_cli(["--prefix", keys.prefix, "dlq", "redrive", entry_id], wide(cli_env))

    # The id is valid, so the lookup runs and finds no such letter.
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert "not found" in completed.stderr
    assert "Traceback" not in completed.stderr


# RP_HOME that is a file, or empty


@pytest.mark.parametrize("command", [["server", "status", "--json"], ["server", "status"], ["server", "stop"],
                                     ["status"]])
def test_rp_home_file_exit_two(tmp_path, command):
    from test_cli_imports import child_env

    home_file = tmp_path / "afile"
    home_file.write_text("not a directory\n")
    env = {**child_env(tmp_path, columns=200), "RP_HOME": str(home_file)}

    completed = invoke_cli(command, env)

    assert_usage_error(completed, f"RP_HOME {home_file} is not a directory", "set RP_HOME to a directory")
    assert home_file.read_text() == "not a directory\n"


def test_rp_home_empty_means_default(tmp_path):
    from test_cli_imports import child_env

    env = {**child_env(tmp_path, columns=200), "RP_HOME": ""}

    # Not run_cli, which runs in the parent of RP_HOME: for an empty RP_HOME that is the repository.
    completed = subprocess.run([sys.executable, "-m", "rewardpilot.cli", "server", "status", "--json"], env=env,
                               capture_output=True, text=True, timeout=60, cwd=tmp_path)

    assert completed.returncode == 1, completed.stderr[-2000:]
    assert json.loads(completed.stdout)["data_dir"] == str((tmp_path / ".rewardpilot").resolve())
    assert "Traceback" not in completed.stderr


# orchestrator --host


def test_orchestrator_empty_host_exit_two(tmp_path):
    from test_cli_imports import child_env

    completed = invoke_cli(["orchestrator", "--no-wallets", "--host", "", "--port", str(free_port())],
                           child_env(tmp_path, columns=200))

    assert_usage_error(completed, "--host '' is empty", "0.0.0.0")
    assert "orchestrator started" not in completed.stderr


# Rejects file that cannot be written


def test_rejects_writer_missing_directory(tmp_path):
    path = tmp_path / "missing" / "x.rejects.jsonl"
    writer = RejectsWriter(path)

    with pytest.raises(RejectsFileError) as raised:
        writer.write({"outcome": "rejected", "line": 7})

    message = str(raised.value)
    assert isinstance(raised.value, OSError)
    assert isinstance(raised.value, ProducerError)
    assert raised.value.path == path
    assert repr(str(path)) in message
    assert "No such file or directory" in message
    assert "line 7" in message
    assert "--rejects PATH" in message
    assert writer.count == 0


def test_rejects_remove_earlier_directory(tmp_path):
    path = tmp_path / "taken.rejects.jsonl"
    path.mkdir()

    with pytest.raises(RejectsFileError) as raised:
        RejectsWriter(path).remove_earlier(lambda notice: None)

    message = str(raised.value)
    assert repr(str(path)) in message
    assert "Nothing was published" in message
    assert "--rejects PATH" in message


@one_server
@pytest.mark.skipif(os.geteuid() != 0, reason="only root passes the --rejects check for a path under /proc")
@pytest.mark.parametrize("command", ["publish", "run"])
def test_cli_rejects_unwritable_json(cli_env, keys, tmp_path, command):
    rows = [good_row(index) for index in range(3)] + ["b1,u1,KROGER #512,groceries,notanumber,5411,2026-05-04T16:00:00Z"]
    write_csv(tmp_path / "bad.csv", rows)

    completed = invoke_cli(["--prefix", keys.prefix, command, "bad.csv", "--rejects", "/proc/x.jsonl", "--json"],
                           wide(cli_env))

    error = json.loads(completed.stdout.strip().splitlines()[-1])
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert error["exit_code"] == 2
    assert "cannot write the rejects file '/proc/x.jsonl'" in error["error"]
    assert "No such file or directory" in error["error"]
    assert "line 5" in error["error"]
    assert "--rejects PATH" in error["error"]
    assert "Traceback" not in completed.stderr


# Exit statuses in help


def test_server_status_help_exit_statuses(tmp_path):
    from test_cli_imports import child_env

    completed = invoke_cli(["server", "status", "--help"], child_env(tmp_path, columns=200))

    output = flat(completed.stdout)
    assert completed.returncode == 0
    assert "Exit status: 0 when the server runs, 1 when it does not" in output


def test_rejects_writer_keeps_other_file(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("not a rejects file\n")

    with pytest.raises(RejectsFileError) as raised:
        RejectsWriter(precious).remove_earlier(lambda notice: None)

    assert "exists and is not a rejects file" in str(raised.value)
    assert precious.read_text() == "not a rejects file\n"


def test_rejects_writer_replaces_own_file(tmp_path):
    earlier = tmp_path / "bad.csv.rejects.jsonl"
    earlier.write_text(json.dumps({"outcome": "rejected", "line": 2, "reason": "x"}) + "\n")
    notices = []

    assert RejectsWriter(earlier).remove_earlier(notices.append) is True
    assert not earlier.exists()
    assert notices == [f"replacing the rejects file of an earlier publish: {earlier}"]


def test_rejects_writer_keeps_device(tmp_path):
    device = tmp_path / "discard"
    device.symlink_to("/dev/null")

    assert RejectsWriter(device).remove_earlier(lambda notice: None) is False
    assert Path("/dev/null").is_char_device()
