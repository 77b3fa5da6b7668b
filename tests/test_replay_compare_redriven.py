"""Replay: --compare finds the live result of a redriven transaction, the subscribe hint, and the summary counts.

A live dead letter that is redriven goes back onto the transactions stream
as a copy with a newer entry id, so its live result points at that copy,
outside a replay range over the original entries.
"""

from __future__ import annotations

import json
import shlex

import pytest

from conftest import invoke_cli, one_server
from fault_proxy import Fault, FaultProxy
from orchestrator_servers import UvicornThread
from rewardpilot.cli.replay_cmd import subscribe_command
from rewardpilot.orchestrator import create_app
from rewardpilot.replay import replay
from rewardpilot.results import read_results
from rewardpilot.streams import StreamKeys
from test_orchestrator_failures import make_transactions, publish
from test_replay_trial_fixes import add_groceries, words


@pytest.fixture(scope="module")
def orchestrator():
    with UvicornThread(create_app()) as running:
        yield running


def consume(keys, cli_env, *extra: str):
    return invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100", "--workers", "1",
                       *extra], cli_env)


def redriven_live_results(keys, cli_env, sync_client, orchestrator, count: int) -> list[str]:
    """Dead-letter ``count`` live transactions, redrive them and consume the copies; return the original entry ids."""
    publish(cli_env["REDIS_URL"], keys, make_transactions(count, prefix="rd"))
    original_ids = [entry_id for entry_id, _ in sync_client.xrange(keys.transactions)]
    with FaultProxy(orchestrator.url, lambda index: Fault(422)) as proxy:
        rejected = consume(keys, cli_env, "--orchestrator", proxy.url, "--max-attempts", "1")
    assert rejected.returncode == 1, rejected.stderr[-2000:]
    assert sync_client.xlen(keys.dead_letters) == count

    redriven = invoke_cli(["--prefix", keys.prefix, "dlq", "redrive", "--all"], cli_env)
    assert redriven.returncode == 0, redriven.stderr[-2000:]
    assert consume(keys, cli_env).returncode == 0
    live = list(read_results(sync_client, keys.results()))
    assert len(live) == count
    assert all(result.entry_id not in original_ids for result in live)
    return original_ids


# --compare matches live results by transaction_id


@one_server
def test_compare_finds_redriven_results(redis_url, keys, sync_client, cli_env, orchestrator):
    original_ids = redriven_live_results(keys, cli_env, sync_client, orchestrator, 6)

    summary = replay(redis_url, keys, start=original_ids[0], end=original_ids[-1], run="r1", compare=True)

    assert summary.results == 6
    assert summary.comparison.missing_live == []
    assert summary.comparison.compared == 6
    assert summary.comparison.live_total_usd == summary.comparison.replay_total_usd


@one_server
def test_cli_compare_redriven_table(keys, sync_client, cli_env, orchestrator):
    original_ids = redriven_live_results(keys, cli_env, sync_client, orchestrator, 4)

    completed = invoke_cli(["--prefix", keys.prefix, "replay", "--run", "r2", "--start", original_ids[0],
                            "--end", original_ids[-1], "--compare"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "Replay vs live: 0 of 4 differ" in words(completed.stdout)
    assert "no live result" not in completed.stdout


def test_compare_counts_missing_live(redis_url, keys, sync_client):
    add_groceries(sync_client, keys, 3)

    summary = replay(redis_url, keys, start="0", run="nolive", compare=True)

    assert summary.comparison.compared == 0
    assert summary.comparison.missing_live == ["g-000", "g-001", "g-002"]


# The subscribe hint names the job and the prefix


@one_server
def test_job_replay_hint_follows_stream(keys, sync_client, cli_env):
    job = StreamKeys(prefix=keys.prefix, job="J4")
    add_groceries(sync_client, job, 3)

    replayed = invoke_cli(["--prefix", keys.prefix, "replay", "--job", "J4", "--start", "0", "--run", "jr"], cli_env)

    assert replayed.returncode == 0, replayed.stderr[-2000:]
    [hint] = [line for line in replayed.stdout.splitlines() if line.startswith("follow its results with: ")]
    command = shlex.split(hint.removeprefix("follow its results with: "))
    assert command == ["rewardpilot", "--prefix", keys.prefix, "subscribe", "--run", "jr", "--job", "J4",
                       "--from-start"]
    followed = invoke_cli(command[1:] + ["--idle-timeout", "1"], cli_env)
    assert followed.returncode == 0, followed.stderr[-2000:]
    assert len(followed.stdout.splitlines()) == 3


@pytest.mark.parametrize(
    ("prefix", "job", "expected"),
    [
        ("rp:", None, "rewardpilot subscribe --run r1 --from-start"),
        ("rp:", "J4", "rewardpilot subscribe --run r1 --job J4 --from-start"),
        ("team a:", "[x]", "rewardpilot --prefix 'team a:' subscribe --run r1 --job '[x]' --from-start"),
    ],
)
def test_subscribe_command_quotes(prefix, job, expected):
    assert subscribe_command(prefix, job, "r1") == expected


# The summary counts entries that already had an outcome, results or dead letters


@one_server
@pytest.mark.parametrize("as_json", [False, True])
def test_summary_counts_earlier_outcomes(keys, sync_client, cli_env, as_json):
    add_groceries(sync_client, keys, 2)
    sync_client.xadd(keys.transactions, {"data": "not json"})
    options = ["--prefix", keys.prefix, "replay", "--start", "0", "--run", "dup"] + (["--json"] if as_json else [])
    first = invoke_cli(options, cli_env)
    assert first.returncode == 1, first.stderr[-2000:]

    again = invoke_cli(options, cli_env)

    assert again.returncode == 0, again.stderr[-2000:]
    if as_json:
        summary = json.loads(again.stdout.strip().splitlines()[-1])
        assert (summary["results"], summary["dead_letters"], summary["duplicates"]) == (0, 0, 3)
    else:
        assert "run dup: 2 new results, 1 dead letter\n" in first.stdout
        assert ("run dup: 0 new results, 0 dead letters; 3 entries got no new outcome because the run already "
                "had one for them (a result or a dead letter)") in words(again.stdout)
        assert "already present" not in again.stdout
    assert len(list(read_results(sync_client, keys.results("dup")))) == 2
