"""``rewardpilot wallet show --json --with-settings``: the table's facts as JSON, the old shape without it."""

from __future__ import annotations

import json

from conftest import invoke_cli, one_server


def set_wallets(prefix: str, cli_env) -> None:
    steps = [
        ["wallet", "set", "u1", "cff", "--cycle-day", "15", "--mode", "cashback"],
        ["wallet", "activate", "u1", "cff", "2025Q3"],
        ["wallet", "activate", "u1", "cff", "2025Q4"],
        ["wallet", "set", "u2", "amex-gold", "citi-double-cash"],
    ]
    for step in steps:
        completed = invoke_cli(["--prefix", prefix, *step], cli_env)
        assert completed.returncode == 0, completed.stderr[-2000:]


@one_server
def test_wallet_json_with_settings(cli_env, keys):
    set_wallets(keys.prefix, cli_env)

    every = invoke_cli(["--prefix", keys.prefix, "wallet", "show", "--json", "--with-settings"], cli_env)
    single = invoke_cli(["--prefix", keys.prefix, "wallet", "show", "u1", "--json", "--with-settings"], cli_env)

    assert every.returncode == 0, every.stderr[-2000:]
    assert json.loads(every.stdout) == {
        "u1": {"cards": ["chase-freedom-flex"], "cycle_day": 15, "mode": "cashback",
               "activations": {"chase-freedom-flex": ["2025Q3", "2025Q4"]}},
        "u2": {"cards": ["amex-gold", "citi-double-cash"], "cycle_day": None, "mode": None, "activations": {}},
    }
    assert single.returncode == 0, single.stderr[-2000:]
    assert list(json.loads(single.stdout)) == ["u1"]
    assert json.loads(single.stdout)["u1"]["cycle_day"] == 15


@one_server
def test_wallet_json_default_shape(cli_env, keys):
    set_wallets(keys.prefix, cli_env)

    every = invoke_cli(["--prefix", keys.prefix, "wallet", "show", "--json"], cli_env)

    assert every.returncode == 0, every.stderr[-2000:]
    assert json.loads(every.stdout) == {"u1": ["chase-freedom-flex"], "u2": ["amex-gold", "citi-double-cash"]}


@one_server
def test_wallet_settings_flag_needs_json(cli_env, keys):
    set_wallets(keys.prefix, cli_env)

    completed = invoke_cli(["--prefix", keys.prefix, "wallet", "show", "u1", "--with-settings"], cli_env)

    assert completed.returncode == 2
    assert "--with-settings only applies with --json" in " ".join(completed.stderr.replace("│", " ").split())
    assert completed.stdout == ""


@one_server
def test_wallet_settings_missing_user(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "wallet", "show", "nobody", "--json", "--with-settings"], cli_env)

    assert completed.returncode == 1
    assert "no wallet for user 'nobody'" in completed.stderr
    assert json.loads(completed.stdout) == {"error": "no wallet for user 'nobody'; set one with "
                                            "`rewardpilot wallet set nobody CARD...`", "exit_code": 1}
