"""`rewardpilot publish --json` and `run --json` report a fatal error as one JSON object on stdout.

Without --json the same errors stay plain `error:` lines on stderr, with
nothing on stdout. Every case exits with status 2 either way.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import free_port, invoke_cli, one_server

DOCUMENTED_HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
GOOD_ROW = "t1,u1,Whole Foods,groceries,12.50,5411,2026-11-01T10:00:00Z\n"


def write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def publish_args(case: str, tmp_path: Path) -> list[str]:
    """Return the arguments after `publish` that make ``case`` fail before any row is published."""
    good = str(write(tmp_path / "good.csv", DOCUMENTED_HEADER + GOOD_ROW))
    if case == "missing file":
        return [str(tmp_path / "nope.csv")]
    if case == "unknown layout":
        return [str(write(tmp_path / "odd.csv", "a,b,c\n1,2,3\n"))]
    if case == "utf-16 header":
        return [str(write(tmp_path / "wide.csv", DOCUMENTED_HEADER.encode("utf-16")))]
    if case == "empty file":
        return [str(write(tmp_path / "empty.csv", ""))]
    if case == "header of commas":
        return [str(write(tmp_path / "commas.csv", ",,,\n,,,\n"))]
    if case == "invalid layout file":
        return [good, "--layout", str(write(tmp_path / "bad.yaml", "{"))]
    if case == "invalid dedup window":
        return [good, "--dedup-window", "3x"]
    if case == "invalid unconverted policy":
        return [good, "--unconverted-currency", "zz"]
    if case == "invalid rates file":
        return [good, "--fx-rates", str(write(tmp_path / "rates.csv", "currency,rate\nEUR,1.1\n"))]
    raise AssertionError(f"no arguments for case {case!r}")


CASES = {
    "missing file": "nope.csv': No such file or directory",
    "unknown layout": "the header 'a,b,c' matches no known layout",
    "utf-16 header": "is UTF-16 text; save it as UTF-8",
    "empty file": "is empty (0 bytes)",
    "header of commas": "has no header line",
    "invalid layout file": "bad.yaml' is not valid YAML or JSON",
    "invalid dedup window": "--dedup-window: age '3x' is invalid",
    "invalid unconverted policy": "--unconverted-currency 'zz' is invalid; use reject or keep",
    "invalid rates file": "the header is 'currency,rate'",
}


def parse_error(stdout: str) -> dict:
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


@one_server
@pytest.mark.parametrize("case", list(CASES))
def test_json_error_on_stdout(case, cli_env, keys, tmp_path):
    completed = invoke_cli(["--prefix", keys.prefix, "publish", "--json", *publish_args(case, tmp_path)], cli_env)

    assert completed.returncode == 2, completed.stderr[-2000:]
    error = parse_error(completed.stdout)
    assert set(error) == {"error", "exit_code"}
    assert error["exit_code"] == 2
    assert CASES[case] in error["error"]
    assert completed.stderr.count("error: ") == 1  # the same error, once, for a person reading stderr


@one_server
@pytest.mark.parametrize("case", list(CASES))
def test_plain_error_on_stderr(case, cli_env, keys, tmp_path):
    completed = invoke_cli(["--prefix", keys.prefix, "publish", *publish_args(case, tmp_path)], cli_env)

    assert completed.returncode == 2
    assert completed.stdout == ""
    assert "error: " in completed.stderr
    assert CASES[case] in " ".join(completed.stderr.split())  # rich wraps the line at 80 columns


@one_server
def test_json_error_redis_unreachable(cli_env, keys, tmp_path):
    args = ["--prefix", keys.prefix, "--redis-url", f"redis://127.0.0.1:{free_port()}/0", "publish", "--json",
            str(write(tmp_path / "good.csv", DOCUMENTED_HEADER + GOOD_ROW))]

    completed = invoke_cli(args, cli_env)

    assert completed.returncode == 2, completed.stderr[-2000:]
    error = parse_error(completed.stdout)
    assert error["exit_code"] == 2
    assert error["error"].startswith("cannot reach Redis at redis://127.0.0.1:")
    assert "\n" not in error["error"]  # one message, not cut at the console's width
    assert completed.stderr.count("error: ") == 1  # the same error, once, for a person reading stderr


@one_server
def test_json_error_partition_mismatch(cli_env, keys, tmp_path):
    source = str(write(tmp_path / "good.csv", DOCUMENTED_HEADER + GOOD_ROW))
    assert invoke_cli(["--prefix", keys.prefix, "publish", source, "--partitions", "1"], cli_env).returncode == 0

    completed = invoke_cli(["--prefix", keys.prefix, "publish", "--json", source, "--partitions", "3"], cli_env)

    assert completed.returncode == 2, completed.stderr[-2000:]
    error = parse_error(completed.stdout)
    assert error["exit_code"] == 2
    assert error["error"].startswith("partition count 3 does not match the 1 partitions stored")
    assert completed.stderr.count("error: ") == 1  # the same error, once, for a person reading stderr


@one_server
def test_json_success_unchanged(cli_env, keys, tmp_path):
    source = str(write(tmp_path / "good.csv", DOCUMENTED_HEADER + GOOD_ROW))

    completed = invoke_cli(["--prefix", keys.prefix, "publish", "--json", source], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads(completed.stdout)
    assert summary["published"] == 1
    assert summary["interrupted"] is None
    assert "error" not in summary


RUN_CASES = {
    "missing file": (lambda tmp_path, good: [str(tmp_path / "nope.csv")], "nope.csv': No such file or directory"),
    "invalid layout file": (lambda tmp_path, good: [good, "--layout", str(write(tmp_path / "bad.yaml", "{"))],
                            "bad.yaml' is not valid YAML or JSON"),
    "output directory missing": (lambda tmp_path, good: [good, "--output", str(tmp_path / "no" / "out.csv")],
                                 "does not exist; create it or choose another path"),
    "invalid keep": (lambda tmp_path, good: [good, "--keep", "5x"], "--keep: age '5x' is invalid"),
    "unknown wallet card": (lambda tmp_path, good: [good, "--wallet", "no-such-card"], "unknown card 'no-such-card'"),
}


@one_server
@pytest.mark.parametrize("case", list(RUN_CASES))
def test_run_json_error_on_stdout(case, cli_env, keys, tmp_path):
    make_args, expected = RUN_CASES[case]
    good = str(write(tmp_path / "good.csv", DOCUMENTED_HEADER + GOOD_ROW))

    completed = invoke_cli(["--prefix", keys.prefix, "run", "--json", *make_args(tmp_path, good)], cli_env)

    assert completed.returncode == 2, completed.stderr[-2000:]
    error = parse_error(completed.stdout)
    assert error["exit_code"] == 2
    assert expected in error["error"]
    assert completed.stderr.count("error: ") == 1  # the same error, once, for a person reading stderr
