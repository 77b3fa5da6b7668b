"""``valuations set``: a negative value gets the range error, and exponent notation is rejected.

The stored values and ``caps.set_valuation`` keep reading any number
Decimal reads. Only the command line requires a plain decimal number.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from conftest import one_server, run_cli
from rewardpilot import caps
from rewardpilot.engine import RulesEngine
from test_replay_trial_fixes import words

PROGRAM = "Amex Membership Rewards"


def set_cents(keys, cli_env, cents: str):
    return run_cli(["--prefix", keys.prefix, "valuations", "set", "alice", PROGRAM, cents], cli_env)


@one_server
@pytest.mark.parametrize("cents", ["-1", "-0.5"])
def test_negative_gets_range_error(keys, cli_env, sync_client, cents):
    completed = set_cents(keys, cli_env, cents)

    assert completed.returncode == 2
    assert "No such option" not in completed.stderr
    assert f"valuation for '{PROGRAM}' must be between 0 and 100 cents, got '{cents}'" in words(completed.stderr)
    assert caps.get_valuations(sync_client, keys, "alice") == {}


@one_server
def test_exponent_rejected_with_plain_form(keys, cli_env, sync_client):
    completed = set_cents(keys, cli_env, "1e1")

    assert completed.returncode == 2
    message = words(completed.stderr)
    assert "'1e1' uses exponent notation, which is not accepted" in message
    assert "write the cents as a plain decimal number, such as 1.5 (1e1 is 10)" in message
    assert caps.get_valuations(sync_client, keys, "alice") == {}


@one_server
@pytest.mark.parametrize("cents", ["1_5", "NaN"])
def test_not_plain_decimal_rejected(keys, cli_env, sync_client, cents):
    completed = set_cents(keys, cli_env, cents)

    assert completed.returncode == 2
    assert f"must be a plain decimal number of cents from 0 to 100, such as 1.5, got '{cents}'" in \
        words(completed.stderr)
    assert caps.get_valuations(sync_client, keys, "alice") == {}


@one_server
@pytest.mark.parametrize(("cents", "stored"), [("1.5", "1.5"), (".5", "0.5")])
def test_plain_decimal_stored(keys, cli_env, sync_client, cents, stored):
    completed = set_cents(keys, cli_env, cents)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert caps.get_valuations(sync_client, keys, "alice") == {PROGRAM: stored}


@one_server
def test_library_still_reads_exponent(keys, sync_client):
    stored = caps.set_valuation(sync_client, keys, "alice", PROGRAM, "1e1", RulesEngine.default().valuations)

    assert Decimal(stored) == Decimal("10")
