"""Replay: the notes on skipped duplicates name the real cause.

An entry skipped because an earlier replay under the same run name settled
it differs from a second entry with the same transaction_id in the stream,
which every run skips whatever its name. The entry id in the marker
distinguishes the two.
"""

from __future__ import annotations

import json

from conftest import one_server, run_cli
from rewardpilot.cli.replay_cmd import duplicate_notes
from rewardpilot.replay import Comparison, ReplaySummary
from test_replay import add_transactions, entry_id, run_live
from test_replay_trial_fixes import words


def add_copy_of_first(client, keys, count: int) -> None:
    """Add the first transaction again after ``count`` entries, as `publish --dedup-window 0` or `dlq redrive` would."""
    [(_, fields)] = client.xrange(keys.transactions, count=1)
    client.xadd(keys.transactions, fields, id=entry_id(count))


def replay_command(keys, run: str, *extra: str) -> list[str]:
    return ["--prefix", keys.prefix, "replay", "--start", entry_id(0), "--run", run, "--compare", *extra]


def summary_with(duplicates: int, repeated: int, *, compared: bool) -> ReplaySummary:
    return ReplaySummary(run="r1", group="replay:r1", start_id="0-0", end_id=None, user=None,
                         duplicates=duplicates, repeated_transaction_ids=repeated,
                         comparison=Comparison() if compared else None)


@one_server
def test_new_run_blames_repeated_transaction_id(cli_env, keys, sync_client):
    add_transactions(sync_client, keys, 2)
    add_copy_of_first(sync_client, keys, 2)
    run_live(cli_env["REDIS_URL"], keys)

    completed = run_cli(replay_command(keys, "brandnew"), cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    stderr = words(completed.stderr)
    assert "earlier replay" not in stderr
    assert ("note: 1 entry repeats the transaction_id of another entry in the stream, which run brandnew "
            "settled first") in stderr
    assert "A new --run name skips it too." in stderr
    assert "`rewardpilot dlq redrive`" in stderr


@one_server
def test_new_run_json_counts_repeats(cli_env, keys, sync_client):
    add_transactions(sync_client, keys, 2)
    add_copy_of_first(sync_client, keys, 2)
    run_live(cli_env["REDIS_URL"], keys)

    completed = run_cli(replay_command(keys, "brandnew", "--json"), cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["results"] == 2
    assert summary["duplicates"] == 1
    assert summary["repeated_transaction_ids"] == 1


@one_server
def test_same_run_again_gives_both_causes(cli_env, keys, sync_client):
    add_transactions(sync_client, keys, 2)
    add_copy_of_first(sync_client, keys, 2)
    run_live(cli_env["REDIS_URL"], keys)
    assert run_cli(replay_command(keys, "twice"), cli_env).returncode == 0

    completed = run_cli(replay_command(keys, "twice"), cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    stderr = words(completed.stderr)
    # The markers of the two original entries name those entries. The copy's names the first of them.
    assert "note: 2 entries keep their results from an earlier replay of run twice" in stderr
    assert "note: 1 entry repeats the transaction_id of another entry in the stream" in stderr


def test_notes_none_without_duplicates():
    assert duplicate_notes(summary_with(0, 0, compared=True)) == []


def test_notes_earlier_replay_only_with_comparison():
    assert duplicate_notes(summary_with(3, 0, compared=False)) == []
    [note] = duplicate_notes(summary_with(3, 0, compared=True))
    assert note.startswith("note: 3 entries keep their results from an earlier replay of run r1")
    assert "replay under a new --run name" in note


def test_notes_repeats_without_comparison():
    [note] = duplicate_notes(summary_with(2, 2, compared=False))
    assert note.startswith("note: 2 entries repeat the transaction_id of another entry in the stream")
    assert "A new --run name skips them too." in note
    assert "comparison" not in note
