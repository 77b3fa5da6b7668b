"""``valuations unset`` rejects an unknown program as ``valuations set`` does, with the same message and exit 2.

A known program without a stored value still exits 0 with a note, and a
stored value of a program the rules do not know can still be removed.
"""

from __future__ import annotations

import pytest

from conftest import invoke_cli, one_server
from rewardpilot.engine import RulesEngine
from rewardpilot.user_terms import check_known_program

KNOWN = "Amex Membership Rewards"


def one_line(text: str) -> str:
    """Join the lines that rich wrapped at the console width."""
    return " ".join(text.split())


def test_check_known_program_accepts_known():
    check_known_program(KNOWN, RulesEngine.default().valuations.programs)


def test_check_known_program_names_choices():
    with pytest.raises(ValueError) as caught:
        check_known_program("Nope", RulesEngine.default().valuations.programs)

    message = str(caught.value)
    assert message.startswith("no valuation program 'Nope'; known programs: ")
    assert KNOWN in message
    assert "cash back," not in message
    assert not message.endswith("cash back")


@one_server
def test_unset_unknown_program_exits_two(cli_env, keys):
    unset = invoke_cli(["--prefix", keys.prefix, "valuations", "unset", "w1", "Nope"], cli_env)
    set_ = invoke_cli(["--prefix", keys.prefix, "valuations", "set", "w1", "Nope", "1.5"], cli_env)

    assert unset.returncode == 2, unset.stderr
    assert set_.returncode == 2, set_.stderr
    assert "no valuation program 'Nope'; known programs:" in one_line(unset.stderr)
    assert one_line(unset.stderr) == one_line(set_.stderr)
    assert "had no stored value" not in unset.stderr


@one_server
def test_unset_known_without_value_exits_zero(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "valuations", "unset", "w1", KNOWN], cli_env)

    assert completed.returncode == 0, completed.stderr
    assert f"w1: {KNOWN} had no stored value, so it already uses the default" in one_line(completed.stderr)


@one_server
def test_unset_stored_value_removed(cli_env, keys, sync_client):
    assert invoke_cli(["--prefix", keys.prefix, "valuations", "set", "w1", KNOWN, "1.5"], cli_env).returncode == 0

    completed = invoke_cli(["--prefix", keys.prefix, "valuations", "unset", "w1", KNOWN], cli_env)

    assert completed.returncode == 0, completed.stderr
    assert f"w1: {KNOWN} now uses the default" in one_line(completed.stderr)
    assert not sync_client.hexists(keys.valuations("w1"), KNOWN)


@one_server
def test_unset_unknown_removes_nothing(cli_env, keys, sync_client):
    assert invoke_cli(["--prefix", keys.prefix, "valuations", "set", "w1", KNOWN, "1.5"], cli_env).returncode == 0

    completed = invoke_cli(["--prefix", keys.prefix, "valuations", "unset", "w1", KNOWN, "Nope"], cli_env)

    assert completed.returncode == 2, completed.stderr
    assert "'Nope'" in completed.stderr
    assert sync_client.hget(keys.valuations("w1"), KNOWN) == "1.5"


@one_server
def test_unset_stale_stored_program(cli_env, keys, sync_client):
    # A program the rules no longer know, stored by an earlier version or written to Redis directly.
    sync_client.hset(keys.valuations("w1"), "Retired Points", "1.2")

    completed = invoke_cli(["--prefix", keys.prefix, "valuations", "unset", "w1", "Retired Points"], cli_env)

    assert completed.returncode == 0, completed.stderr
    assert "w1: Retired Points now uses the default" in one_line(completed.stderr)
    assert not sync_client.exists(keys.valuations("w1"))


@one_server
def test_unset_markup_program_escaped(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "valuations", "unset", "w1", "[bold]x[/bold]"], cli_env)

    assert completed.returncode == 2, completed.stderr
    assert "'[bold]x[/bold]'" in completed.stderr
    assert "MarkupError" not in completed.stderr


@one_server
def test_unset_empty_user_exits_two(cli_env, keys):
    completed = invoke_cli(["--prefix", keys.prefix, "valuations", "unset", " ", KNOWN], cli_env)

    assert completed.returncode == 2, completed.stderr
    assert "user id is empty" in completed.stderr
