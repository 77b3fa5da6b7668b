"""Small things a new user of `run` and the example data runs into."""

from __future__ import annotations

import csv
import json
from decimal import Decimal

from conftest import ROOT, invoke_cli, one_server
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction
from rewardpilot.wallets import DEMO_WALLETS


def one_row_file(tmp_path, transaction_id: str):
    """Write a documented-layout CSV with one $40.00 gas purchase; return its path."""
    source = tmp_path / "one.csv"
    source.write_text("transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
                      f"{transaction_id},u1,Shell,gas,40.00,5541,2026-11-02T10:00:00Z\n")
    return source


def test_demo_wallets_belong_to_example_users():
    with (ROOT / "examples" / "transactions.csv").open(newline="") as handle:
        users = {row["user_id"] for row in csv.DictReader(handle)}

    assert set(DEMO_WALLETS) <= users


def test_cash_like_reasoning_names_the_order():
    transaction = Transaction(transaction_id="c1", user_id="u1", merchant="Western Union", category="money transfer",
                              mcc="4829", amount_usd=Decimal("100.00"))

    rec = RulesEngine.default().recommend(transaction, ["citi-custom-cash", "wells-fargo-active-cash"])

    assert rec.rewards.cash_value_usd == Decimal("0.00")
    assert "listed first because the ranking then goes by annual fee, lowest first, and then by card id" in \
        rec.reasoning


@one_server
def test_run_warns_orchestrator_url_unused(cli_env, keys, tmp_path):
    source = one_row_file(tmp_path, "o1")

    done = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--json", "--keep", "1h"],
                      {**cli_env, "ORCHESTRATOR_URL": "http://127.0.0.1:9"})

    assert done.returncode == 0, done.stderr[-2000:]
    assert "ORCHESTRATOR_URL is set, but `run` recommends with the in-process engine" in " ".join(done.stderr.split())
    assert json.loads(done.stdout.strip().splitlines()[-1])["total_transactions"] == 1


def test_base_command_keeps_global_options():
    from rewardpilot.cli.context import base_command

    assert base_command("rp:", None)[1:] == []
    assert base_command("team:", "redis://127.0.0.1:6379/9")[1:] == [
        "--redis-url", "redis://127.0.0.1:6379/9", "--prefix", "team:"]
    # A URL with a password is never printed, so the hint relies on REDIS_URL.
    assert base_command("team:", "redis://:s3cret@127.0.0.1:6379/9")[1:] == ["--prefix", "team:"]
    assert base_command("rp:", "redis://127.0.0.1:6379/9?password=s3cret")[1:] == []


@one_server
def test_run_hint_names_prefix(cli_env, keys, tmp_path):
    source = one_row_file(tmp_path, "h1")

    done = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--job", "hint", "--keep", "1h"], cli_env)

    assert done.returncode == 0, done.stderr[-2000:]
    assert f"--prefix {keys.prefix} subscribe --job hint --from-start" in " ".join(done.stderr.split())


@one_server
def test_run_missing_file_leaves_no_keys(cli_env, keys, sync_client, tmp_path):
    missing = tmp_path / "nosuchfile.csv"

    done = invoke_cli(["--prefix", keys.prefix, "run", str(missing), "--json"], cli_env)

    assert done.returncode == 2
    error = json.loads(done.stdout.strip().splitlines()[-1])
    assert error["error"].startswith(f"cannot open {str(missing)!r}: No such file or directory")
    assert list(sync_client.scan_iter(match=f"{keys.prefix}*", count=1000)) == []


@one_server
def test_run_unreadable_header_keys_expire(cli_env, keys, sync_client, tmp_path):
    source = tmp_path / "unknown.csv"
    source.write_text("when,what,how much\n2026-11-02,coffee,4.50\n")

    done = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--job", "badheader", "--keep", "1h"], cli_env)

    assert done.returncode == 2
    job_keys = list(sync_client.scan_iter(match=f"{keys.prefix}job:badheader:*", count=1000))
    assert job_keys
    assert all(0 < sync_client.ttl(key) <= 3600 for key in job_keys)


@one_server
def test_run_empty_job_rejected(cli_env, keys, tmp_path):
    source = one_row_file(tmp_path, "e1")

    done = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--job", "", "--json"], cli_env)

    assert done.returncode == 2
    assert json.loads(done.stdout.strip().splitlines()[-1])["error"].startswith("--job '' is empty")


@one_server
def test_run_live_with_job_rejected(cli_env, keys, tmp_path):
    source = one_row_file(tmp_path, "l1")

    done = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--live", "--job", "j1"], cli_env)

    assert done.returncode == 2
    assert "--job j1 and --live were both given" in " ".join(done.stderr.split())
