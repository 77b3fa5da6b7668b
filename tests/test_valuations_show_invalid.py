"""`valuations show` with stored values that the consumers leave out.

The values are written straight into the user's valuations hash, as an
older version or a hand edit would leave them. The command shows the
default that applies instead, marks the row, warns on stderr with the
command that fixes it, and still exits 0.
"""

from __future__ import annotations

import json

from conftest import invoke_cli, one_server
from rewardpilot.cli.valuations_cmd import _invalid_overrides
from rewardpilot.engine import RulesEngine

ENGINE = RulesEngine.default()
AMEX = "Amex Membership Rewards"  # 2.0 cents per point by default
CHASE = "Chase Ultimate Rewards"
CITI = "Citi ThankYou Points"


def show(keys, cli_env, *options):
    return invoke_cli(["--prefix", keys.prefix, "valuations", "show", "u1", *options], cli_env)


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_invalid_overrides_lists_reasons():
    stored = {AMEX: "abc", CHASE: "250", CITI: "1.2", "Gone Program": "3"}

    reasons = _invalid_overrides(ENGINE, stored, "u1")

    assert sorted(reasons) == [AMEX, CHASE, "Gone Program"]
    assert "'abc'" in reasons[AMEX]
    assert "between 0 and 100" in reasons[CHASE]
    assert reasons["Gone Program"] == "the valuation table has no program of that name"


def test_invalid_overrides_empty_when_valid():
    assert _invalid_overrides(ENGINE, {AMEX: "1.5", CITI: "0"}, "u1") == {}


@one_server
def test_show_json_marks_invalid_value(keys, sync_client, cli_env):
    sync_client.hset(keys.valuations("u1"), mapping={AMEX: "abc", CITI: "1.2"})

    completed = show(keys, cli_env, "--json")

    assert completed.returncode == 0, completed.stderr
    rows = json.loads(completed.stdout)
    assert rows[AMEX] == {"cents_per_point": "2.0", "source": "default", "invalid_user_value": "abc"}
    assert rows[CITI] == {"cents_per_point": "1.2", "source": "user"}
    assert "invalid_user_value" not in rows[CHASE]


@one_server
def test_show_warns_with_fix(keys, sync_client, cli_env):
    sync_client.hset(keys.valuations("u1"), AMEX, "250")

    completed = show(keys, cli_env)

    stderr = one_line(completed.stderr)
    assert completed.returncode == 0, completed.stderr
    assert "warning: user 'u1': the stored valuation '250' for program 'Amex Membership Rewards' is invalid" in stderr
    assert "between 0 and 100 cents" in stderr
    assert "use the default instead, 2.0 cents per point" in stderr
    assert f"--prefix {keys.prefix} valuations set u1 'Amex Membership Rewards' CENTS" in stderr
    assert f"--prefix {keys.prefix} valuations unset u1 'Amex Membership Rewards'" in stderr


@one_server
def test_show_table_marks_invalid_row(keys, sync_client, cli_env):
    sync_client.hset(keys.valuations("u1"), AMEX, "abc")

    completed = show(keys, cli_env)

    row = next((line for line in completed.stdout.splitlines() if AMEX in line), "")
    cells = [cell.strip() for cell in row.split("│")]
    assert completed.returncode == 0, completed.stderr
    assert cells[2] == "2.0", completed.stdout
    assert "invalid" in cells[3], completed.stdout
    assert "'abc'" in cells[3], completed.stdout


@one_server
def test_show_unknown_program_warns(keys, sync_client, cli_env):
    sync_client.hset(keys.valuations("u1"), "Gone Program", "3")

    completed = show(keys, cli_env, "--json")

    stderr = one_line(completed.stderr)
    assert completed.returncode == 0, completed.stderr
    assert "Gone Program" not in json.loads(completed.stdout)
    assert "the stored valuation '3' for program 'Gone Program' is invalid" in stderr
    assert "no program of that name" in stderr
    assert f"--prefix {keys.prefix} valuations unset u1 'Gone Program'" in stderr
    assert "valuations set" not in stderr  # `set` rejects a program the table does not list


@one_server
def test_show_markup_value_printed_as_is(keys, sync_client, cli_env):
    sync_client.hset(keys.valuations("u1"), AMEX, "[red]9")

    completed = show(keys, cli_env)

    assert completed.returncode == 0, completed.stderr
    assert "'[red]9'" in one_line(completed.stderr)
    assert "'[red]9'" in completed.stdout


@one_server
def test_show_valid_values_no_warning(keys, sync_client, cli_env):
    sync_client.hset(keys.valuations("u1"), AMEX, "1.4")

    completed = show(keys, cli_env, "--json")

    assert completed.returncode == 0, completed.stderr
    assert "warning" not in completed.stderr
    assert json.loads(completed.stdout)[AMEX] == {"cents_per_point": "1.4", "source": "user"}


@one_server
def test_show_empty_user_exit_two(keys, cli_env):
    completed = invoke_cli(["--prefix", keys.prefix, "valuations", "show", ""], cli_env)

    assert completed.returncode == 2
    assert "error:" in completed.stderr
    assert "Traceback" not in completed.stderr
