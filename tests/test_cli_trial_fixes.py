"""CLI behaviour found by a new-user trial: unknown jobs, empty replay runs, quarters the catalog lacks, plurals."""

from __future__ import annotations

import json

import pytest

from conftest import invoke_cli, one_server
from test_partition_tools import add_unroutable_letter as add_dead_letter
from rewardpilot import codec, wallets
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction
from rewardpilot.partitions import count_key
from rewardpilot.streams import StreamKeys

ENGINE = RulesEngine.default()
HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp"


def keys_under(client, prefix: str) -> list[str]:
    return sorted(client.scan_iter(match=f"{prefix}*", count=1000))


def write_gas_csv(path, count: int = 3) -> None:
    rows = [f"g{index},u1,SHELL OIL 5744,gas,{10 + index}.00,5541,2026-11-10T13:00:00Z" for index in range(count)]
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")


# Unknown job ids


@one_server
def test_consume_unknown_job_exits(keys, sync_client, cli_env):
    completed = invoke_cli(["--prefix", keys.prefix, "consume", "--job", "nosuchjob", "--drain", "--block-ms", "100"],
                           cli_env)

    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "no job 'nosuchjob'" in completed.stderr
    assert completed.stdout == ""
    assert keys_under(sync_client, keys.prefix) == []


@one_server
def test_consume_unknown_job_then_status(keys, cli_env):
    invoke_cli(["--prefix", keys.prefix, "consume", "--job", "nosuchjob", "--drain", "--block-ms", "100"], cli_env)

    status = invoke_cli(["--prefix", keys.prefix, "status", "--job", "nosuchjob"], cli_env)

    assert status.returncode == 2
    assert "no job 'nosuchjob'" in status.stderr


@one_server
@pytest.mark.parametrize("extra", [["--dry-run"], [], ["--dry-run", "--json"]])
def test_trim_unknown_job_exits(keys, sync_client, cli_env, extra):
    completed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "1m", "--job", "nosuchjob", *extra],
                           cli_env)

    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "no job 'nosuchjob'" in completed.stderr
    assert "would remove" not in completed.stdout
    if "--json" in extra:
        assert json.loads(completed.stdout)["error"].startswith("no job 'nosuchjob'")
    else:
        assert completed.stdout == ""
    assert keys_under(sync_client, keys.prefix) == []


@one_server
def test_consume_and_trim_published_job(keys, sync_client, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv")
    job = StreamKeys(prefix=keys.prefix, job="j1")
    published = invoke_cli(["--prefix", keys.prefix, "publish", str(tmp_path / "gas.csv"), "--job", "j1"], cli_env)
    assert published.returncode == 0, published.stderr[-2000:]

    consumed = invoke_cli(["--prefix", keys.prefix, "consume", "--job", "j1", "--drain", "--block-ms", "100"], cli_env)
    trimmed = invoke_cli(["--prefix", keys.prefix, "trim", "--older-than", "1m", "--job", "j1", "--dry-run"], cli_env)

    assert consumed.returncode == 0, consumed.stderr[-2000:]
    assert json.loads(consumed.stdout)["results"] == 3
    assert sync_client.xlen(job.results()) == 3
    assert trimmed.returncode == 0, trimmed.stderr[-2000:]
    assert f"{job.transactions}: would remove 0 entries" in trimmed.stdout


@one_server
def test_consume_job_with_count_only(keys, sync_client, cli_env):
    """A job whose run stored its partition count but published nothing yet is a known job."""
    job = StreamKeys(prefix=keys.prefix, job="j2")
    sync_client.set(count_key(job), 1)

    consumed = invoke_cli(["--prefix", keys.prefix, "consume", "--job", "j2", "--drain", "--block-ms", "100"], cli_env)

    assert consumed.returncode == 0, consumed.stderr[-2000:]


# The report's hint for a replay run


@one_server
def test_report_unknown_run_hint(keys, cli_env):
    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "me", "--month", "2024-04",
                            "--run", "nosuchrun"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"No results exist for run 'nosuchrun' under prefix '{keys.prefix}'" in completed.stderr
    assert keys.results("nosuchrun") in completed.stderr
    assert "rewardpilot replay --run NAME" in completed.stderr
    assert "live streams" not in completed.stderr
    assert "--job ID" not in completed.stderr


@one_server
def test_report_run_without_user_hint(keys, sync_client, cli_env):
    transaction = Transaction(transaction_id="t1", user_id="someone-else", merchant="SHELL OIL 5744",
                              amount_usd="10.00", mcc="5541", timestamp="2026-11-10T13:00:00Z")
    sync_client.xadd(keys.results("r1"), codec.encode_result(ENGINE.recommend(transaction, None)))

    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "me", "--month", "2026-11", "--run", "r1"],
                           cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "No results for user 'me' in 2026-11 in run 'r1'" in completed.stderr
    assert "No results exist" not in completed.stderr


@one_server
def test_report_job_run_hint(keys, sync_client, cli_env, tmp_path):
    write_gas_csv(tmp_path / "gas.csv", count=1)
    assert invoke_cli(["--prefix", keys.prefix, "publish", str(tmp_path / "gas.csv"), "--job", "j1"],
                      cli_env).returncode == 0

    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "u1", "--month", "2026-11", "--job", "j1",
                            "--run", "nosuchrun"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"No results exist for run 'nosuchrun' of job 'j1' under prefix '{keys.prefix}'" in completed.stderr


@one_server
def test_report_live_hint(keys, cli_env):
    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "me", "--month", "2024-04"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "No results for user 'me' in 2024-04 on the live streams" in completed.stderr


# Activating a quarter the catalog has no categories for


@one_server
@pytest.mark.parametrize(("card", "quarter", "rate"), [
    ("chase-freedom-flex", "2026Q4", "1x"),
    ("discover-it-cash-back", "2026-Q2", "1%"),
])
def test_activate_unknown_quarter_warns(keys, sync_client, cli_env, card, quarter, rate):
    wallets.set_wallet(sync_client, keys, "bob", [card], ENGINE.catalog)

    completed = invoke_cli(["--prefix", keys.prefix, "wallet", "activate", "bob", card, quarter], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    key = wallets.check_quarter(quarter)
    assert f"{card}: {key} activated for bob" in completed.stderr
    assert f"warning: the catalog has no quarterly bonus categories for {card} in {key}" in completed.stderr
    assert f"base rate ({rate})" in completed.stderr
    assert wallets.get_wallet_record(sync_client, keys, "bob").activations == {card: [key]}


@one_server
@pytest.mark.parametrize("quarter", ["2025Q2", "2025Q3", "2026Q1"])
def test_activate_known_quarter_quiet(keys, sync_client, cli_env, quarter):
    wallets.set_wallet(sync_client, keys, "bob", ["chase-freedom-flex"], ENGINE.catalog)

    completed = invoke_cli(["--prefix", keys.prefix, "wallet", "activate", "bob", "chase-freedom-flex", quarter],
                           cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"chase-freedom-flex: {quarter} activated for bob" in completed.stderr
    assert "warning" not in completed.stderr


# Singular and plural dead letters


@one_server
def test_dlq_one_letter_singular(keys, sync_client, cli_env):
    add_dead_letter(sync_client, keys)

    listed = invoke_cli(["--prefix", keys.prefix, "dlq", "list"], cli_env)
    declined = invoke_cli(["--prefix", keys.prefix, "dlq", "purge"], cli_env, input="n\n")
    purged = invoke_cli(["--prefix", keys.prefix, "dlq", "purge", "--yes"], cli_env)

    assert listed.returncode == 0, listed.stderr[-2000:]
    assert f"{keys.dead_letters}: 1 dead letter" in listed.stdout
    assert "1 dead letters" not in listed.stdout
    assert declined.returncode == 1
    assert f"Delete 1 dead letter from {keys.dead_letters}?" in declined.stdout + declined.stderr
    assert purged.returncode == 0, purged.stderr[-2000:]
    assert "purged 1 dead letter\n" in purged.stderr


@one_server
def test_dlq_redrive_one_singular(keys, sync_client, cli_env):
    letter_id = add_dead_letter(sync_client, keys)

    completed = invoke_cli(["--prefix", keys.prefix, "dlq", "redrive", letter_id], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"redrove 1 dead letter onto {keys.transactions}" in completed.stderr


@one_server
def test_dlq_two_letters_plural(keys, sync_client, cli_env):
    add_dead_letter(sync_client, keys)
    add_dead_letter(sync_client, keys)

    purged = invoke_cli(["--prefix", keys.prefix, "dlq", "purge", "--yes"], cli_env)

    assert purged.returncode == 0, purged.stderr[-2000:]
    assert "purged 2 dead letters\n" in purged.stderr
