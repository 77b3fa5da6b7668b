"""Empty views explain themselves: status before any consumer, wallet show without wallets, an empty report."""

from __future__ import annotations

import json

import pytest

from conftest import invoke_cli, one_server
from rewardpilot import codec
from rewardpilot.cli.status_cmd import _no_consumer_hint
from rewardpilot.cli.wallet_cmd import _no_wallets_hint
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction
from rewardpilot.partitions import count_key
from rewardpilot.streams import DEFAULT_PREFIX, StreamKeys

ENGINE = RulesEngine.default()


def add_entry(client, stream: str) -> None:
    client.xadd(stream, {"data": "{}"})


def add_result(client, stream: str, user: str, timestamp: str = "2026-11-10T13:00:00Z") -> None:
    transaction = Transaction(transaction_id=f"t-{user}-{timestamp}", user_id=user, merchant="SHELL OIL 5744",
                              amount_usd="10.00", mcc="5541", timestamp=timestamp)
    client.xadd(stream, codec.encode_result(ENGINE.recommend(transaction, None)))


def status_snapshot(length: int, groups: list, partitions: list | None = None) -> dict:
    return {
        "transactions": {"stream": "rp:transactions", "length": length, "groups": groups},
        "partitions": partitions or [],
    }


# status before any consumer ran


@one_server
def test_status_hint_without_group(cli_env, keys, sync_client):
    add_entry(sync_client, keys.transactions)
    add_entry(sync_client, keys.transactions)

    plain = invoke_cli(["--prefix", keys.prefix, "status"], cli_env)

    assert plain.returncode == 0, plain.stderr[-2000:]
    assert f"no consumer has read {keys.transactions} yet (2 entries, no consumer group)" in plain.stderr
    assert f"Start one with: rewardpilot --prefix {keys.prefix} consume\n" in plain.stderr
    assert "no consumer has read" not in plain.stdout  # stdout stays the table


@one_server
def test_status_hint_names_job(cli_env, keys, sync_client):
    add_entry(sync_client, StreamKeys(prefix=keys.prefix, job="j-7").transactions)

    plain = invoke_cli(["--prefix", keys.prefix, "status", "--job", "j-7"], cli_env)

    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "(1 entry, no consumer group)" in plain.stderr
    assert f"Start one with: rewardpilot --prefix {keys.prefix} consume --job j-7\n" in plain.stderr


@one_server
def test_status_no_hint_with_group(cli_env, keys, sync_client):
    add_entry(sync_client, keys.transactions)
    sync_client.xgroup_create(keys.transactions, keys.group(), id="0")

    plain = invoke_cli(["--prefix", keys.prefix, "status"], cli_env)

    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "no consumer has read" not in plain.stderr


@one_server
def test_status_no_hint_empty_stream(cli_env, keys):
    plain = invoke_cli(["--prefix", keys.prefix, "status"], cli_env)

    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "no consumer has read" not in plain.stderr


@one_server
def test_status_json_no_hint(cli_env, keys, sync_client):
    add_entry(sync_client, keys.transactions)

    as_json = invoke_cli(["--prefix", keys.prefix, "status", "--json"], cli_env)

    assert as_json.returncode == 0, as_json.stderr[-2000:]
    assert json.loads(as_json.stdout)["transactions"]["groups"] == []
    assert as_json.stderr == ""


@one_server
def test_status_watch_hint_once(cli_env, keys, sync_client):
    add_entry(sync_client, keys.transactions)

    watched = invoke_cli(["--prefix", keys.prefix, "status", "--watch", "--count", "2", "--interval", "0.05"], cli_env)

    assert watched.returncode == 0, watched.stderr[-2000:]
    assert watched.stderr.count("no consumer has read") == 1


@one_server
def test_status_hint_partitions(cli_env, keys, sync_client):
    sync_client.set(count_key(keys), 3)
    add_entry(sync_client, f"{keys.transactions}:p1")
    add_entry(sync_client, f"{keys.transactions}:p2")

    plain = invoke_cli(["--prefix", keys.prefix, "status"], cli_env)

    assert plain.returncode == 0, plain.stderr[-2000:]
    assert f"no consumer has read {keys.transactions}:p0 to p2 yet (2 entries, no consumer group)" in plain.stderr


def test_no_consumer_hint_cases(monkeypatch):
    monkeypatch.setattr("rewardpilot.cli.status_cmd.program_name", lambda: "rewardpilot")
    group = {"name": "rp-consumers", "consumers": []}

    assert _no_consumer_hint(status_snapshot(0, []), DEFAULT_PREFIX, None) is None
    assert _no_consumer_hint(status_snapshot(3, [group]), DEFAULT_PREFIX, None) is None
    assert _no_consumer_hint(status_snapshot(3, []), DEFAULT_PREFIX, None) == (
        "no consumer has read rp:transactions yet (3 entries, no consumer group). "
        "Start one with: rewardpilot consume")
    assert _no_consumer_hint(status_snapshot(1, []), "team a:", "my job").endswith(
        "Start one with: rewardpilot --prefix 'team a:' consume --job 'my job'")


def test_no_consumer_hint_partition_group():
    """A group on any one partition means a consumer has started, so no hint."""
    partitions = [
        {"partition": 0, "stream": "rp:transactions:p0", "length": 4, "groups": []},
        {"partition": 1, "stream": "rp:transactions:p1", "length": 0, "groups": [{"name": "rp-consumers"}]},
    ]

    assert _no_consumer_hint(status_snapshot(0, [], partitions), DEFAULT_PREFIX, None) is None


# wallet show without wallets


@one_server
def test_wallet_show_none_hint(cli_env, keys):
    listed = invoke_cli(["--prefix", keys.prefix, "wallet", "show"], cli_env)

    assert listed.returncode == 0, listed.stderr[-2000:]
    assert listed.stdout == ""
    assert f"no wallets stored under prefix '{keys.prefix}'" in listed.stderr
    assert f"add one with: rewardpilot --prefix {keys.prefix} wallet set USER CARD..." in listed.stderr


@one_server
def test_wallet_show_none_json(cli_env, keys):
    for extra in ([], ["--with-settings"]):
        listed = invoke_cli(["--prefix", keys.prefix, "wallet", "show", "--json", *extra], cli_env)

        assert listed.returncode == 0, listed.stderr[-2000:]
        assert json.loads(listed.stdout) == {}
        assert listed.stderr == ""


@one_server
def test_wallet_hint_command_works(cli_env, keys):
    """The command the hint prints, filled in, stores a wallet that show then lists."""
    stored = invoke_cli(["--prefix", keys.prefix, "wallet", "set", "u1", "citi-double-cash"], cli_env)
    listed = invoke_cli(["--prefix", keys.prefix, "wallet", "show"], cli_env)

    assert stored.returncode == 0, stored.stderr[-2000:]
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "citi-double-cash" in listed.stdout
    assert "no wallets stored" not in listed.stderr


def test_no_wallets_hint_default_prefix(monkeypatch):
    monkeypatch.setattr("rewardpilot.cli.wallet_cmd.program_name", lambda: "rewardpilot")

    assert _no_wallets_hint(DEFAULT_PREFIX) == (
        "no wallets stored under prefix 'rp:'; add one with: rewardpilot wallet set USER CARD... "
        "(card ids from `rewardpilot cards`)")


# report for a user with no results


@one_server
def test_report_hint_counts_others(cli_env, keys, sync_client):
    add_result(sync_client, keys.results(), "someone-else")
    add_result(sync_client, keys.results(), "another-one")

    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "me", "--month", "2026-11"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "No results for user 'me' in 2026-11 on the live streams." in completed.stderr
    assert f"The results stream {keys.results()} has 2 results, none for this user in that period." in completed.stderr
    assert "pass --job ID" in completed.stderr


@one_server
def test_report_hint_empty_stream(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "me", "--year", "2025"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "No results for user 'me' in 2025 on the live streams." in completed.stderr
    assert f"The results stream {keys.results()} is empty." in completed.stderr


@one_server
def test_report_hint_other_month(cli_env, keys, sync_client):
    """The user's own results in another month count among the stream's results, none in the period asked."""
    add_result(sync_client, keys.results(), "me", timestamp="2026-10-10T13:00:00Z")

    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "me", "--month", "2026-11"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "has 1 result, none for this user in that period" in completed.stderr


@one_server
def test_report_hint_names_job(cli_env, keys, sync_client):
    job = StreamKeys(prefix=keys.prefix, job="j1")
    add_entry(sync_client, job.transactions)
    add_result(sync_client, job.results(), "someone-else")

    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "me", "--month", "2026-11", "--job", "j1"],
                           cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"No results for user 'me' in 2026-11 in job 'j1' under prefix '{keys.prefix}'." in completed.stderr
    assert "has 1 result, none for this user" in completed.stderr
    assert "pass --job ID" not in completed.stderr


@one_server
def test_report_json_no_hint(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "me", "--month", "2026-11", "--json"],
                           cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert json.loads(completed.stdout)["purchases"] == 0
    assert "No results" not in completed.stderr


@pytest.mark.parametrize("user", ["me", "user [1]"])
@one_server
def test_report_hint_user_literal(cli_env, keys, user):
    """The user id is printed as given, brackets included, because the hint has no markup."""
    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", user, "--month", "2026-11"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"No results for user {user!r} in 2026-11" in completed.stderr
