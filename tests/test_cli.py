"""The ``rewardpilot`` command line.

Most tests call it in the test process (``invoke_cli``). A full run, the exit
statuses 1 and 2 and the embedded server that several processes share are
tested in a subprocess, as a user runs the CLI.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys

import pytest
import redis

from conftest import ROOT, SHARED_DATA, invoke_cli, one_server, run_cli

TABFORMER = SHARED_DATA / "tabformer-user0" / "User0_credit_card_transactions.2002-2016.csv"


def write_csv(path, rows):
    columns = ["transaction_id", "user_id", "merchant", "category", "amount_usd", "mcc", "timestamp"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def summary_of(completed) -> dict:
    assert completed.returncode in (0, 1), completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@one_server
def test_run_example_file(cli_env, keys, tmp_path):
    source = tmp_path / "head.csv"
    lines = (ROOT / "examples" / "transactions.csv").read_text().splitlines()[:501]
    source.write_text("\n".join(lines) + "\n")
    output = tmp_path / "results.csv"

    completed = run_cli(["--prefix", keys.prefix, "run", str(source), "--json", "--output", str(output)], cli_env)
    summary = summary_of(completed)

    assert completed.returncode == 0
    assert summary["total_transactions"] == 500
    assert summary["successful"] == 500
    assert summary["failed"] == 0
    assert float(summary["total_rewards"]) > 0
    with output.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 500
    assert {row["transaction_id"] for row in rows} == {line.split(",")[0] for line in lines[1:]}


@one_server
def test_run_twice_gives_two_jobs(cli_env, keys, tmp_path):
    source = write_csv(tmp_path / "two.csv", [
        ["a1", "u1", "Whole Foods", "groceries", "20.00", "5411", "2026-11-02T10:00:00Z"],
        ["a2", "u1", "Shell", "gas", "40.00", "5541", "2026-11-02T11:00:00Z"],
    ])
    first = summary_of(invoke_cli(["--prefix", keys.prefix, "run", str(source), "--json"], cli_env))
    second = summary_of(invoke_cli(["--prefix", keys.prefix, "run", str(source), "--json"], cli_env))

    assert first["job"] != second["job"]
    assert first["successful"] == second["successful"] == 2


@one_server
def test_run_same_file_same_totals(cli_env, keys):
    """A run keeps each user's purchases in file order, so caps give the same totals every time."""
    example = str(ROOT / "examples" / "transactions.csv")
    first = summary_of(invoke_cli(["--prefix", keys.prefix, "run", example, "--json"], cli_env))
    second = summary_of(invoke_cli(["--prefix", keys.prefix, "run", example, "--json"], cli_env))

    assert first["successful"] == second["successful"] == 3000
    assert first["consumer"]["cap_conflicts"] == 0
    assert first["total_rewards"] == second["total_rewards"]


@one_server
def test_subscribe_unknown_job_exits(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "subscribe", "--job", "no-such-job"], cli_env)

    assert completed.returncode == 2
    assert "no job 'no-such-job'" in completed.stderr


@one_server
def test_run_rejects_bad_rows_exit_one(cli_env, keys, tmp_path):
    source = write_csv(tmp_path / "mixed.csv", [
        ["b1", "u1", "Whole Foods", "groceries", "20.00", "5411", "2026-11-02T10:00:00Z"],
        ["b2", "u1", "Shell", "gas", "twelve", "5541", "2026-11-02T11:00:00Z"],
        ["b3", "u1", "Refund", "groceries", "-5.00", "5411", "2026-11-02T12:00:00Z"],
    ])
    completed = run_cli(["--prefix", keys.prefix, "run", str(source), "--json"], cli_env)
    summary = summary_of(completed)

    assert completed.returncode == 1
    assert summary["successful"] == 1
    rejects = (tmp_path / "mixed.csv.rejects.jsonl").read_text()
    assert "twelve" in rejects
    assert "line 3" in completed.stderr or '"line": 3' in rejects


@one_server
def test_run_run_wallet_applies(cli_env, keys, tmp_path):
    source = write_csv(tmp_path / "one.csv", [
        ["w1", "nobody", "Whole Foods", "groceries", "100.00", "5411", "2026-11-02T10:00:00Z"],
    ])
    output = tmp_path / "out.jsonl"
    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--json", "--wallet",
                            "citi-double-cash", "--output", str(output)], cli_env)
    assert completed.returncode == 0, completed.stderr[-2000:]

    result = json.loads(output.read_text().splitlines()[0])
    assert result["wallet_source"] == "run"
    assert result["recommended_card"]["card_id"] == "citi-double-cash"
    # Citi Double Cash: 2% on every purchase (1% when bought, 1% when paid): $2.00 on $100.
    assert result["rewards"]["cash_value_usd"] == "2.00"


@one_server
def test_unknown_wallet_card_exit_two(cli_env, keys, tmp_path):
    source = write_csv(tmp_path / "one.csv", [
        ["w1", "nobody", "Whole Foods", "groceries", "100.00", "5411", "2026-11-02T10:00:00Z"],
    ])
    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--wallet", "amex-goldd"], cli_env)

    assert completed.returncode == 2
    assert "amex-goldd" in completed.stderr


@one_server
def test_missing_file_exit_two(cli_env, keys, tmp_path):
    completed = run_cli(["--prefix", keys.prefix, "publish", str(tmp_path / "nope.csv")], cli_env)

    assert completed.returncode == 2
    assert "nope.csv" in completed.stderr


@one_server
def test_wallet_set_and_show(cli_env, keys):
    assert invoke_cli(["--prefix", keys.prefix, "wallet", "set", "alice", "amex-gold", "citi-double-cash"],
                      cli_env).returncode == 0
    shown = invoke_cli(["--prefix", keys.prefix, "wallet", "show", "alice", "--json"], cli_env)

    assert json.loads(shown.stdout) == {"alice": ["amex-gold", "citi-double-cash"]}


@one_server
def test_wallet_set_echoes_stored_wallet(cli_env, keys):
    first = invoke_cli(["--prefix", keys.prefix, "wallet", "set", "user-1001", "csp", "amex-gold",
                        "--cycle-day", "15", "--mode", "cash"], cli_env)
    again = invoke_cli(["--prefix", keys.prefix, "wallet", "set", "user-1001", "csp"], cli_env)
    plain = invoke_cli(["--prefix", keys.prefix, "wallet", "set", "bob", "amex gold"], cli_env)

    assert first.returncode == 0, first.stderr[-2000:]
    assert "wallet of user-1001: chase-sapphire-preferred, amex-gold (cycle day 15, mode cash)\n" in first.stderr
    assert again.returncode == 0, again.stderr[-2000:]
    assert "wallet of user-1001: chase-sapphire-preferred (cycle day 15, mode cash)\n" in again.stderr  # kept
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "wallet of bob: amex-gold\n" in plain.stderr


@one_server
def test_wallet_set_rejects_valuation_mode(cli_env, keys):
    rejected = invoke_cli(["--prefix", keys.prefix, "wallet", "set", "u-m3", "amex-gold", "chase-freedom-unlimited",
                           "--mode", "program:Chase Ultimate Rewards (cash back)"], cli_env)
    accepted = invoke_cli(["--prefix", keys.prefix, "wallet", "set", "u-m3", "amex-gold", "chase-freedom-unlimited",
                           "--mode", "program:Chase Ultimate Rewards"], cli_env)

    assert rejected.returncode == 2
    assert "so use program:Chase Ultimate Rewards." in " ".join((rejected.stderr + rejected.stdout).split())
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert "mode program:Chase Ultimate Rewards" in accepted.stderr


@one_server
def test_wallet_activate_echoes_card_id(cli_env, keys):
    assert invoke_cli(["--prefix", keys.prefix, "wallet", "set", "u1", "cff"], cli_env).returncode == 0

    done = invoke_cli(["--prefix", keys.prefix, "wallet", "activate", "u1", "cff", "2025-q3"], cli_env)

    assert done.returncode == 0, done.stderr[-2000:]
    assert "chase-freedom-flex: 2025Q3 activated for u1\n" in done.stderr


@one_server
def test_wallet_show_stored_settings(cli_env, keys):
    assert invoke_cli(["--prefix", keys.prefix, "wallet", "set", "u1", "cff", "--cycle-day", "15",
                       "--mode", "cashback"], cli_env).returncode == 0
    assert invoke_cli(["--prefix", keys.prefix, "wallet", "activate", "u1", "cff", "2025Q3"], cli_env).returncode == 0
    assert invoke_cli(["--prefix", keys.prefix, "wallet", "set", "u2", "amex-gold"], cli_env).returncode == 0

    single = invoke_cli(["--prefix", keys.prefix, "wallet", "show", "u1"], cli_env)
    every = invoke_cli(["--prefix", keys.prefix, "wallet", "show"], cli_env)
    plain = invoke_cli(["--prefix", keys.prefix, "wallet", "show", "u2"], cli_env)
    as_json = invoke_cli(["--prefix", keys.prefix, "wallet", "show", "--json"], cli_env)

    assert single.returncode == 0, single.stderr[-2000:]
    for text in ("cycle day", "mode", "activations", "cashback", "chase-freedom-flex: 2025Q3"):
        assert text in single.stdout
    assert re.search(r"│ u1 +│.*│ 15 +│ cashback +│", single.stdout)
    assert every.returncode == 0, every.stderr[-2000:]
    assert re.search(r"│ u1 +│.*│ 15 +│ cashback +│ chase-freedom-flex: 2025Q3 +│", every.stdout)
    assert re.search(r"│ u2 +│.*│ calendar months +│ cash \(default\) +│ none +│", every.stdout)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "cycle day" not in plain.stdout  # u2 stores no settings, so the table has no setting columns
    assert json.loads(as_json.stdout) == {"u1": ["chase-freedom-flex"], "u2": ["amex-gold"]}


@one_server
def test_wallet_show_empty_user_id(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "wallet", "show", " "], cli_env)

    assert completed.returncode == 2
    assert "user id is empty" in completed.stderr


@one_server
def test_wallet_set_unknown_card(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "wallet", "set", "alice", "amex-goldd"], cli_env)

    assert completed.returncode == 2
    assert "amex-goldd" in completed.stderr


@one_server
def test_status_json_lists_group(cli_env, keys, tmp_path):
    source = write_csv(tmp_path / "s.csv", [
        ["s1", "u1", "Whole Foods", "groceries", "20.00", "5411", "2026-11-02T10:00:00Z"],
    ])
    assert invoke_cli(["--prefix", keys.prefix, "publish", str(source)], cli_env).returncode == 0
    consumed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "200"], cli_env)
    assert consumed.returncode == 0, consumed.stderr[-2000:]

    snapshot = json.loads(invoke_cli(["--prefix", keys.prefix, "status", "--json"], cli_env).stdout)

    assert snapshot["transactions"]["length"] == 1
    assert snapshot["transactions"]["groups"][0]["pending"] == 0
    assert snapshot["transactions"]["groups"][0]["lag"] == 0
    assert snapshot["results"]["live"] == 1


@one_server
def test_subscribe_from_start(cli_env, keys, tmp_path):
    source = write_csv(tmp_path / "s.csv", [
        ["s1", "u1", "Whole Foods", "groceries", "20.00", "5411", "2026-11-02T10:00:00Z"],
        ["s2", "u2", "Shell", "gas", "30.00", "5541", "2026-11-02T10:00:00Z"],
    ])
    invoke_cli(["--prefix", keys.prefix, "publish", str(source)], cli_env)
    invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "200"], cli_env)

    completed = invoke_cli(["--prefix", keys.prefix, "subscribe", "--from-start", "--user", "u2",
                            "--idle-timeout", "1"], cli_env)

    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [line["transaction_id"] for line in lines] == ["s2"]


@one_server
@pytest.mark.skipif(not TABFORMER.exists(), reason="shared TabFormer sample not present")
def test_tabformer_one_result_per_purchase(cli_env, keys, tmp_path):
    # Counted independently: 16,247 rows = 15,251 purchases + 524 refunds + 472 declined.
    completed = invoke_cli(["--prefix", keys.prefix, "run", str(TABFORMER), "--json",
                            "--rejects", str(tmp_path / "rejects.jsonl")], cli_env)
    summary = summary_of(completed)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert summary["total_transactions"] == 15_251
    assert summary["successful"] == 15_251
    assert summary["failed"] == 0

    client = redis.Redis.from_url(cli_env["REDIS_URL"], decode_responses=True)
    job_keys = keys.__class__(prefix=keys.prefix, job=summary["job"])
    assert client.xpending(job_keys.transactions, job_keys.group())["pending"] == 0
    assert client.xlen(job_keys.results()) == 15_251
    client.close()


@pytest.mark.slow
def test_embedded_server_shared_and_stopped(tmp_path):
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env["RP_HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = str(ROOT)
    try:
        started = run_cli(["wallet", "set", "bob", "amex-gold"], env)
        assert started.returncode == 0
        assert "keep RP_HOME set to reach the same data again" in started.stderr
        first = json.loads(run_cli(["server", "status", "--json"], env).stdout)
        assert first["running"] is True
        plain = run_cli(["server", "status"], env)
        assert f"embedded Valkey running: pid {first['pid']}" in plain.stdout

        # A second process finds the same server and its data.
        shown = run_cli(["wallet", "show", "bob", "--json"], env)
        second = json.loads(run_cli(["server", "status", "--json"], env).stdout)
        assert json.loads(shown.stdout) == {"bob": ["amex-gold"]}
        assert second["pid"] == first["pid"]
        assert (tmp_path / "home" / "appendonlydir").exists()
    finally:
        run_cli(["server", "stop"], env)
    stopped = run_cli(["server", "status", "--json"], env)
    assert json.loads(stopped.stdout)["running"] is False
    assert stopped.returncode == 1
    assert "embedded Valkey not running" in run_cli(["server", "status"], env).stdout


def test_program_name_in_hints(monkeypatch, tmp_path):
    """A hint names the CLI as it can be typed: the venv path until rewardpilot is on PATH."""
    import shutil

    from rewardpilot.cli.context import program_name

    script = tmp_path / ".venv" / "bin" / "rewardpilot"
    script.parent.mkdir(parents=True)
    script.write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "run"])

    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert program_name() == ".venv/bin/rewardpilot"

    monkeypatch.setattr(shutil, "which", lambda name: str(script))
    assert program_name() == "rewardpilot"

    monkeypatch.setattr(sys, "argv", ["/somewhere/rewardpilot/cli/__main__.py"])
    assert program_name() == "rewardpilot"


@one_server
def test_consume_marker_ttl_sets_marker_expiry(cli_env, keys, tmp_path):
    source = write_csv(tmp_path / "s.csv", [
        ["m1", "u1", "Whole Foods", "groceries", "20.00", "5411", "2026-11-02T10:00:00Z"],
    ])
    assert invoke_cli(["--prefix", keys.prefix, "publish", str(source)], cli_env).returncode == 0

    consumed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "200",
                           "--marker-ttl", "2h"], cli_env)

    assert consumed.returncode == 0, consumed.stderr[-2000:]
    client = redis.Redis.from_url(cli_env["REDIS_URL"])
    try:
        assert 7000 < client.ttl(keys.result_marker("live", "m1")) <= 7200
    finally:
        client.close()


@one_server
def test_consume_bad_marker_ttl_named(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--marker-ttl", "forever"], cli_env)

    assert completed.returncode == 2
    assert "--marker-ttl" in completed.stderr
    assert "'forever'" in completed.stderr


@one_server
def test_consume_warns_when_retention_outlives_markers(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "200",
                            "--marker-ttl", "7d", "--trim-older-than", "30d"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "second result" in completed.stderr
    assert "--trim-older-than 30d" in completed.stderr
    assert "--marker-ttl 7d" in completed.stderr


@one_server
def test_run_prints_subscribe_command_unwrapped(cli_env, keys, tmp_path):
    """The command to copy stays on one line when the output is not a terminal (80 columns)."""
    source = write_csv(tmp_path / "s.csv", [
        ["w1", "u1", "Whole Foods", "groceries", "20.00", "5411", "2026-11-02T10:00:00Z"],
    ])

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source)], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    output = completed.stdout + completed.stderr
    lines = [line for line in output.splitlines() if line.startswith("follow this job's results with:")]
    assert len(lines) == 1
    assert re.search(r"subscribe --job \S+ --from-start$", lines[0])


@one_server
def test_run_unreadable_file_stops_quietly(cli_env, keys, tmp_path):
    """A file that matches no layout stops the job with exit 2 and no warning about pending entries."""
    source = tmp_path / "no-header.csv"
    source.write_text("01/09/2015,05354 SUBWAY,8.19,,1000.00\n01/10/2015,SHELL,30.00,,970.00\n")

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(source)], cli_env)

    stderr = " ".join(completed.stderr.split())  # the console wraps long lines
    assert completed.returncode == 2
    assert "looks like data, not a header" in stderr
    assert "consumer aborting" not in stderr


@one_server
def test_publish_shows_each_input_warning_once(cli_env, keys, tmp_path):
    """An input warning appears in the summary table only, not also as a log line."""
    source = tmp_path / "mint.csv"
    source.write_text(
        "Date,Description,Original Description,Amount,Transaction Type,Category,Account Name,Labels,Notes\n"
        "6/12/15,Whole Foods,WHOLEFDS MKT,84.20,debit,Groceries,Visa,,\n"
    )

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(source)], cli_env)

    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-2000:]
    assert "input warning" not in output
    assert "Labels" in output


@one_server
def test_publish_dedup_window_off_publishes_again(cli_env, keys, tmp_path):
    source = write_csv(tmp_path / "again.csv", [
        ["w1", "u1", "Whole Foods", "groceries", "20.00", "5411", "2026-11-02T10:00:00Z"],
        ["w2", "u1", "Shell", "gas", "40.00", "5541", "2026-11-02T11:00:00Z"],
    ])

    def publish(*options) -> dict:
        completed = invoke_cli(["--prefix", keys.prefix, "publish", str(source), "--json", *options], cli_env)
        return summary_of(completed)

    first = publish()
    again = publish()
    forced = publish("--dedup-window", "0")

    assert (first["published"], first["duplicates"]) == (2, 0)
    assert (again["published"], again["duplicates"]) == (0, 2)
    assert (forced["published"], forced["duplicates"]) == (2, 0)


@one_server
def test_publish_dedup_window_invalid_exit_two(cli_env, keys, tmp_path):
    source = write_csv(tmp_path / "one.csv", [["v1", "u1", "Shell", "gas", "40.00", "5541", "2026-11-02T11:00:00Z"]])

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(source), "--dedup-window", "-1h"], cli_env)

    assert completed.returncode == 2
    assert "--dedup-window: age '-1h' is invalid" in " ".join(completed.stderr.split())


@one_server
def test_tls_url_to_plain_server_says_so(cli_env, redis_url):
    from urllib.parse import urlsplit

    address = urlsplit(redis_url)
    env = {**cli_env, "REDIS_URL": f"rediss://:tls-secret-7@{address.hostname}:{address.port}/0"}

    completed = invoke_cli(["status"], env)

    output = " ".join(completed.stderr.split())
    assert completed.returncode == 2
    assert "The URL asks for TLS (rediss://); for a server without TLS, use redis://" in output
    assert "tls-secret-7" not in completed.stderr + completed.stdout
