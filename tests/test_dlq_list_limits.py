"""``rewardpilot dlq``: how many letters list shows, --run on list and purge, and redrive's missing-argument errors."""

from __future__ import annotations

import json
import re

import pytest

from conftest import invoke_cli, one_server
from consumer import dlq
from rewardpilot.models import DeadLetter

LETTERS = 75


def letter(keys, run: str, index: int) -> DeadLetter:
    """Return a dead letter of ``run`` for entry ``index``, with a payload that names its transaction."""
    data = json.dumps({"transaction_id": f"tx-{run}-{index}", "user_id": "u1"})
    return DeadLetter(
        entry_id=f"{1700000000000 + index}-0", stream=keys.transactions, payload={"data": data},
        reason="rejected by recommender", error_type="Rejected", error="422", run=run,
        transaction_id=f"tx-{run}-{index}", first_failure_at="2026-11-01T00:00:00Z",
        last_failure_at="2026-11-01T00:00:00Z",
    )


def add_letters(client, keys, runs: list[str]) -> list[str]:
    """Add one letter per item of ``runs``, each with its outcome marker; return the dead-letter ids in order."""
    with client.pipeline(transaction=False) as pipe:
        for index, run in enumerate(runs):
            added = letter(keys, run, index)
            pipe.xadd(keys.dead_letters, {"data": added.model_dump_json()})
            pipe.set(keys.result_marker(run, added.transaction_id), added.entry_id)
        replies = pipe.execute()
    return replies[::2]  # the XADD replies; each SET replies True


def marker_exists(client, keys, run: str, index: int) -> bool:
    return bool(client.exists(keys.result_marker(run, f"tx-{run}-{index}")))


def dlq_cli(keys, cli_env, *args: str, input: str | None = None):
    return invoke_cli(["--prefix", keys.prefix, "dlq", *args], {**cli_env, "COLUMNS": "250"}, input=input)


def flat(text: str) -> str:
    return " ".join(text.split())


def table_rows(stdout: str) -> list[str]:
    """Return the table's body rows: lines that start with a cell holding a dead-letter id."""
    return [line for line in stdout.splitlines() if re.match(r"^│ \d+-\d+ ", line)]


# list: how many


@one_server
def test_json_lists_every_letter(keys, cli_env, sync_client):
    ids = add_letters(sync_client, keys, ["live"] * LETTERS)

    completed = dlq_cli(keys, cli_env, "list", "--json")

    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [line["id"] for line in lines] == ids
    assert "showing" not in completed.stderr


@one_server
def test_json_limit_still_applies(keys, cli_env, sync_client):
    ids = add_letters(sync_client, keys, ["live"] * 30)

    completed = dlq_cli(keys, cli_env, "list", "--json", "--limit", "5")

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert [json.loads(line)["id"] for line in completed.stdout.splitlines()] == ids[:5]


@one_server
def test_table_cut_says_so(keys, cli_env, sync_client):
    ids = add_letters(sync_client, keys, ["live"] * LETTERS)

    completed = dlq_cli(keys, cli_env, "list")

    assert completed.returncode == 0, completed.stderr[-2000:]
    rows = table_rows(completed.stdout)
    assert len(rows) == 20
    assert rows[0].startswith(f"│ {ids[0]} ")
    assert f"{LETTERS} dead letters" in completed.stdout
    message = flat(completed.stderr)
    assert f"showing the oldest 20 of {LETTERS} dead letters" in message
    assert f"pass --limit {LETTERS} to show them all, or --json" in message


@one_server
def test_table_whole_no_note(keys, cli_env, sync_client):
    add_letters(sync_client, keys, ["live"] * LETTERS)

    everything = dlq_cli(keys, cli_env, "list", "--limit", str(LETTERS))
    few = dlq_cli(keys, cli_env, "list", "--limit", "3")

    assert everything.returncode == 0, everything.stderr[-2000:]
    assert len(table_rows(everything.stdout)) == LETTERS
    assert "showing" not in everything.stderr
    assert len(table_rows(few.stdout)) == 3
    assert f"showing the oldest 3 of {LETTERS} dead letters" in flat(few.stderr)


@one_server
def test_table_under_default_no_note(keys, cli_env, sync_client):
    add_letters(sync_client, keys, ["live"] * 4)

    completed = dlq_cli(keys, cli_env, "list")

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert len(table_rows(completed.stdout)) == 4
    assert "showing" not in completed.stderr


@one_server
def test_limit_zero_rejected(keys, cli_env):
    completed = dlq_cli(keys, cli_env, "list", "--limit", "0")

    assert completed.returncode == 2
    assert "--limit" in completed.stderr


# list --run


@one_server
def test_list_run_filters(keys, cli_env, sync_client):
    runs = ["live", "nightly"] * 15
    ids = add_letters(sync_client, keys, runs)
    nightly = [letter_id for letter_id, run in zip(ids, runs) if run == "nightly"]

    as_json = dlq_cli(keys, cli_env, "list", "--run", "nightly", "--json")
    limited = dlq_cli(keys, cli_env, "list", "--run", "nightly", "--json", "--limit", "4")
    table = dlq_cli(keys, cli_env, "list", "--run", "nightly", "--limit", "2")

    assert as_json.returncode == 0, as_json.stderr[-2000:]
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [line["id"] for line in lines] == nightly
    assert {line["letter"]["run"] for line in lines} == {"nightly"}
    assert [json.loads(line)["id"] for line in limited.stdout.splitlines()] == nightly[:4]
    assert table.returncode == 0, table.stderr[-2000:]
    assert "15 dead letters of run nightly" in table.stdout
    assert len(table_rows(table.stdout)) == 2
    assert "showing the oldest 2 of 15 dead letters of run nightly" in flat(table.stderr)


def json_error(stderr: str, exit_code: int) -> str:
    """Return the JSON line a --json command prints on stdout for the error line on ``stderr``."""
    message = flat(stderr).split("error: ", 1)[1]
    return json.dumps({"error": message, "exit_code": exit_code}) + "\n"


@one_server
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_list_unknown_run_exits_two(keys, cli_env, sync_client, json_flag):
    add_letters(sync_client, keys, ["live", "nightly"])

    completed = dlq_cli(keys, cli_env, "list", "--run", "nosuch", *json_flag)

    assert completed.returncode == 2
    # With --json, the error is also one JSON object on stdout; without it, stdout stays empty.
    assert completed.stdout == (json_error(completed.stderr, 2) if json_flag else "")
    message = flat(completed.stderr)
    assert "--run 'nosuch'" in message
    assert "runs present: live, nightly" in message


@one_server
def test_list_run_on_empty_stream(keys, cli_env):
    completed = dlq_cli(keys, cli_env, "list", "--run", "live")

    assert completed.returncode == 2
    assert f"{keys.dead_letters} holds no dead letters" in flat(completed.stderr)


# purge --run


@one_server
def test_purge_run_keeps_other_runs(keys, cli_env, sync_client):
    runs = ["live", "nightly", "live", "nightly", "nightly"]
    ids = add_letters(sync_client, keys, runs)

    completed = dlq_cli(keys, cli_env, "purge", "--run", "live", "--yes")

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "purged 2 dead letters of run live\n" in completed.stderr
    assert "deleted their 2 outcome markers" in flat(completed.stderr)
    remaining = [entry_id for entry_id, _ in sync_client.xrange(keys.dead_letters)]
    assert remaining == [ids[1], ids[3], ids[4]]
    for index, run in enumerate(runs):
        assert marker_exists(sync_client, keys, run, index) == (run == "nightly"), (index, run)


@one_server
def test_purge_run_prompt_names_run(keys, cli_env, sync_client):
    add_letters(sync_client, keys, ["live", "nightly", "nightly"])

    declined = dlq_cli(keys, cli_env, "purge", "--run", "nightly", input="n\n")
    confirmed = dlq_cli(keys, cli_env, "purge", "--run", "nightly", input="y\n")

    assert declined.returncode == 1
    assert f"Delete 2 dead letters of run nightly from {keys.dead_letters}?" in declined.stdout + declined.stderr
    assert confirmed.returncode == 0, confirmed.stderr[-2000:]
    assert [stored.run for _, stored in dlq.list_dead_letters(sync_client, keys)] == ["live"]
    assert marker_exists(sync_client, keys, "live", 0)


@one_server
def test_purge_unknown_run_exits_two(keys, cli_env, sync_client):
    add_letters(sync_client, keys, ["live", "nightly"])

    completed = dlq_cli(keys, cli_env, "purge", "--run", "nosuch", "--yes")
    on_empty = invoke_cli(["--prefix", keys.prefix + "empty:", "dlq", "purge", "--run", "live", "--yes"], cli_env)

    assert completed.returncode == 2
    assert "runs present: live, nightly" in flat(completed.stderr)
    assert sync_client.xlen(keys.dead_letters) == 2
    assert marker_exists(sync_client, keys, "live", 0)
    assert marker_exists(sync_client, keys, "nightly", 1)
    assert on_empty.returncode == 2
    assert "holds no dead letters" in flat(on_empty.stderr)


def test_purge_run_across_chunks(sync_client, keys, monkeypatch):
    # Chunks of two letters, so each chunk has letters of the other run that stay behind the cursor.
    monkeypatch.setattr(dlq, "READ_CHUNK", 2)
    runs = ["nightly", "live", "nightly", "nightly", "live", "nightly", "live"]
    ids = add_letters(sync_client, keys, runs)

    counts = dlq.purge(sync_client, keys, run="live")

    assert counts == dlq.PurgeCounts(letters=3, markers=3)
    assert [entry_id for entry_id, _ in sync_client.xrange(keys.dead_letters)] == [
        letter_id for letter_id, run in zip(ids, runs) if run == "nightly"]


def test_purge_run_keeps_unreadable(sync_client, keys):
    add_letters(sync_client, keys, ["live"])
    unreadable = sync_client.xadd(keys.dead_letters, {"data": "not a letter"})

    by_run = dlq.purge(sync_client, keys, run="live")
    remaining_after_run = [entry_id for entry_id, _ in sync_client.xrange(keys.dead_letters)]
    everything = dlq.purge(sync_client, keys)

    assert by_run == dlq.PurgeCounts(letters=1, markers=1)
    assert remaining_after_run == [unreadable]
    assert everything == dlq.PurgeCounts(letters=1, markers=0)
    assert sync_client.xlen(keys.dead_letters) == 0


def test_purge_run_through_id(sync_client, keys):
    ids = add_letters(sync_client, keys, ["live", "nightly", "live"])

    counts = dlq.purge(sync_client, keys, through_id=ids[1], run="live")

    assert counts.letters == 1
    assert [entry_id for entry_id, _ in sync_client.xrange(keys.dead_letters)] == [ids[1], ids[2]]


def test_count_run_letters(sync_client, keys):
    ids = add_letters(sync_client, keys, ["live", "nightly", "live"])
    sync_client.xadd(keys.dead_letters, {"data": "not a letter"})

    assert dlq.count_run_letters(sync_client, keys, "live") == 2
    assert dlq.count_run_letters(sync_client, keys, "live", through_id=ids[1]) == 1
    with pytest.raises(dlq.RunMismatchError, match="runs present: live, nightly"):
        dlq.count_run_letters(sync_client, keys, "nosuch")


def test_list_run_limit_across_chunks(sync_client, keys, monkeypatch):
    monkeypatch.setattr(dlq, "READ_CHUNK", 2)
    runs = ["nightly", "nightly", "nightly", "live", "nightly", "live", "live"]
    ids = add_letters(sync_client, keys, runs)
    live = [letter_id for letter_id, run in zip(ids, runs) if run == "live"]

    assert [letter_id for letter_id, _ in dlq.list_dead_letters(sync_client, keys, run="live")] == live
    assert [letter_id for letter_id, _ in dlq.list_dead_letters(sync_client, keys, run="live", limit=2)] == live[:2]
    assert [letter_id for letter_id, _ in dlq.list_dead_letters(sync_client, keys, limit=3)] == ids[:3]


# redrive: ids or --all


@one_server
def test_redrive_nothing_named(keys, cli_env):
    plain = dlq_cli(keys, cli_env, "redrive")
    with_run = dlq_cli(keys, cli_env, "redrive", "--run", "nosuch")

    assert plain.returncode == 2
    assert "no dead letters named; give their ids (see `rewardpilot dlq list`), or --all to redrive every " \
           "dead letter" in flat(plain.stderr)
    assert "not both" not in plain.stderr
    assert with_run.returncode == 2
    assert "or --all to redrive every dead letter of run nosuch" in flat(with_run.stderr)


@one_server
def test_redrive_ids_and_all(keys, cli_env, sync_client):
    [letter_id] = add_letters(sync_client, keys, ["live"])

    completed = dlq_cli(keys, cli_env, "redrive", letter_id, "--all")

    assert completed.returncode == 2
    assert "dead-letter ids and --all were both given" in flat(completed.stderr)
    assert sync_client.xlen(keys.dead_letters) == 1
