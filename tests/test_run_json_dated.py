"""``run --json`` counts future- and past-dated rows under the same names as ``publish --json``."""

from __future__ import annotations

import json

from conftest import invoke_cli, one_server

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
DATED_NAMES = ("future_dated", "first_future_line", "past_dated", "first_past_line")


def write_dated_file(path) -> None:
    """Write five rows: two dated in 8999 (lines 3 and 5), one in 1900 (line 4), two ordinary."""
    path.write_text(
        HEADER
        + "d1,u1,Whole Foods,groceries,10.00,5411,2026-11-02T10:00:00Z\n"
        + "d2,u1,Whole Foods,groceries,11.00,5411,8999-12-31T00:00:00Z\n"
        + "d3,u2,Shell,gas,12.00,5541,1900-01-01T00:00:00Z\n"
        + "d4,u2,Shell,gas,13.00,5541,8999-12-31T00:00:00Z\n"
        + "d5,u3,Shell,gas,14.00,5541,2026-11-03T10:00:00Z\n"
    )


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@one_server
def test_run_json_dated_counts(cli_env, keys, tmp_path):
    source = tmp_path / "dated.csv"
    write_dated_file(source)

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--json", "--keep", "1h"], cli_env)

    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = last_json(completed.stdout)
    assert summary["total_transactions"] == 5
    assert summary["input"]["future_dated"] == 2
    assert summary["input"]["first_future_line"] == 3
    assert summary["input"]["past_dated"] == 1
    assert summary["input"]["first_past_line"] == 4


@one_server
def test_run_json_dated_zero(cli_env, keys, tmp_path):
    source = tmp_path / "plain.csv"
    source.write_text(HEADER + "p1,u1,Whole Foods,groceries,10.00,5411,2026-11-02T10:00:00Z\n")

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--json", "--keep", "1h"], cli_env)

    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = last_json(completed.stdout)
    assert summary["input"]["future_dated"] == 0
    assert summary["input"]["past_dated"] == 0
    assert summary["input"]["first_future_line"] is None
    assert summary["input"]["first_past_line"] is None


@one_server
def test_run_and_publish_agree(cli_env, keys, tmp_path):
    source = tmp_path / "dated.csv"
    write_dated_file(source)

    ran = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--json", "--keep", "1h"], cli_env)
    published = invoke_cli(["--prefix", keys.prefix, "publish", str(source), "--json", "--dedup-window", "0"], cli_env)

    assert ran.returncode == 0, ran.stderr[-3000:]
    assert published.returncode == 0, published.stderr[-3000:]
    run_input = last_json(ran.stdout)["input"]
    publish_summary = last_json(published.stdout)
    for name in DATED_NAMES:
        assert name in publish_summary, name
        assert run_input[name] == publish_summary[name], name


@one_server
def test_run_table_shows_dated(cli_env, keys, tmp_path):
    source = tmp_path / "dated.csv"
    write_dated_file(source)

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--keep", "1h"],
                           {**cli_env, "COLUMNS": "200"})

    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = {" ".join(line.strip("│ ").split()) for line in completed.stdout.splitlines()}
    assert any(row.startswith("future_dated") and row.split()[-1] == "2" for row in rows), completed.stdout
    assert any(row.startswith("past_dated") and row.split()[-1] == "1" for row in rows), completed.stdout
