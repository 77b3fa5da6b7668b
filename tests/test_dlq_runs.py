"""Dead letters record their run: redrive by run, purge with markers, and list.

Replay letters come from a real replay whose orchestrator calls a proxy
rejects with status 422. Live letters come from a real consumer, from entries that
are not valid transactions.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex

import pytest
import redis.asyncio as aioredis

from conftest import invoke_cli, one_server
from consumer import dlq
from fault_proxy import Fault, FaultProxy
from orchestrator_servers import UvicornThread
from rewardpilot.models import DeadLetter
from rewardpilot.orchestrator import create_app
from rewardpilot.replay import replay_async
from rewardpilot.results import read_results
from rewardpilot.streams import StreamKeys
from test_orchestrator_failures import fast_options, make_transactions, publish

INVALID_DATA = '{"transaction_id": "bad-1", "user_id": "u1"}'  # no merchant, amount or time


@pytest.fixture(scope="module")
def orchestrator():
    with UvicornThread(create_app()) as running:
        yield running


async def replay_rejected(redis_url, keys, orchestrator, run: str = "r401") -> None:
    """Replay every entry as ``run`` while the orchestrator proxy rejects each call with 422."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        with FaultProxy(orchestrator.url, lambda index: Fault(422)) as proxy:
            summary = await replay_async(client, keys, start="0", run=run, options=fast_options(proxy.url),
                                         block_ms=100, batch_size=5)
    finally:
        await client.aclose()
    assert summary.dead_letters > 0


def consume(keys, cli_env, *extra: str):
    return invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100", "--workers", "1",
                       *extra], cli_env)


def add_invalid_entry(client, keys) -> str:
    """Add an entry that a consumer dead-letters as invalid, because its payload lacks required fields."""
    return client.xadd(keys.transactions, {"data": INVALID_DATA})


def letters(client, keys) -> list[tuple[str, DeadLetter]]:
    return list(dlq.list_dead_letters(client, keys))


def live_result_ids(client, keys) -> list[str]:
    return sorted(result.transaction_id for result in read_results(client, keys.results()))


def dlq_cli(keys, cli_env, *args: str, job: str | None = None, input: str | None = None):
    job_args = ["--job", job] if job else []
    return invoke_cli(["--prefix", keys.prefix, "dlq", *args, *job_args], cli_env, input=input)


# The run on each letter


def test_letter_without_run_reads_live():
    stored = {
        "entry_id": "1700000000000-0", "stream": "rp:transactions", "payload": {}, "reason": "invalid entry",
        "error_type": "ValidationError", "error": "x", "first_failure_at": "2026-11-01T00:00:00Z",
        "last_failure_at": "2026-11-01T00:00:00Z",
    }

    assert DeadLetter.model_validate_json(json.dumps(stored)).run == "live"


@one_server
def test_settle_records_each_run(redis_url, keys, sync_client, cli_env, orchestrator):
    publish(redis_url, keys, make_transactions(3, prefix="r"))
    add_invalid_entry(sync_client, keys)
    assert consume(keys, cli_env).returncode == 1  # one invalid entry dead-lettered

    asyncio.run(replay_rejected(redis_url, keys, orchestrator))

    runs = [letter.run for _, letter in letters(sync_client, keys)]
    assert runs.count("live") == 1
    assert runs.count("r401") == 4  # three rejected transactions and the invalid entry


# Redrive by run


@one_server
def test_redrive_all_keeps_replay_off_live(redis_url, keys, sync_client, cli_env, orchestrator):
    published = publish(redis_url, keys, make_transactions(5, prefix="p"))
    assert consume(keys, cli_env).returncode == 0
    asyncio.run(replay_rejected(redis_url, keys, orchestrator))
    assert len(letters(sync_client, keys)) == 5

    redriven = dlq_cli(keys, cli_env, "redrive", "--all")

    assert redriven.returncode == 0, redriven.stderr[-2000:]
    assert "deleted 5 dead letters of run r401 and their outcome markers" in redriven.stderr
    assert sync_client.xlen(keys.transactions) == 5
    assert sync_client.xlen(keys.dead_letters) == 0
    for transaction_id in published:
        assert sync_client.exists(keys.result_marker("r401", transaction_id)) == 0
        assert sync_client.exists(keys.result_marker("live", transaction_id)) == 1

    command = shlex.split(redriven.stdout.strip())
    assert command[:3] == ["rewardpilot", "--prefix", keys.prefix]
    assert command[3:6] == ["replay", "--run", "r401"]
    replayed = invoke_cli(command[1:] + ["--json"], cli_env)
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert json.loads(replayed.stdout)["results"] == 5

    assert sorted(result.transaction_id for result in read_results(sync_client, keys.results("r401"))) == published
    assert consume(keys, cli_env).returncode == 0
    assert live_result_ids(sync_client, keys) == published


@one_server
def test_redrive_command_covers_range(redis_url, keys, sync_client, cli_env, orchestrator):
    publish(redis_url, keys, make_transactions(4, prefix="g"))
    entry_ids = [entry_id for entry_id, _ in sync_client.xrange(keys.transactions)]
    asyncio.run(replay_rejected(redis_url, keys, orchestrator, run="again"))
    middle = [letter_id for letter_id, letter in letters(sync_client, keys)
              if letter.entry_id in entry_ids[1:3]]

    redriven = dlq_cli(keys, cli_env, "redrive", *middle)

    assert redriven.returncode == 0, redriven.stderr[-2000:]
    command = shlex.split(redriven.stdout.strip())
    assert command[command.index("--start") + 1] == entry_ids[1]
    assert command[command.index("--end") + 1] == entry_ids[2]
    assert sync_client.xlen(keys.dead_letters) == 2


@one_server
def test_redrive_command_names_job(keys, sync_client, cli_env):
    job = StreamKeys(prefix=keys.prefix, job="j1")
    entry_id = sync_client.xadd(job.transactions, {"data": INVALID_DATA})
    letter = DeadLetter(
        entry_id=entry_id, stream=job.transactions, payload={"data": INVALID_DATA}, reason="invalid entry",
        error_type="ValidationError", error="merchant: field required", run="nightly",
        first_failure_at="2026-11-01T00:00:00Z", last_failure_at="2026-11-01T00:00:00Z",
    )
    sync_client.xadd(job.dead_letters, {"data": letter.model_dump_json()})
    sync_client.set(job.result_marker("nightly", f"entry:{entry_id}"), entry_id)

    redriven = dlq_cli(keys, cli_env, "redrive", "--all", job="j1")

    assert redriven.returncode == 0, redriven.stderr[-2000:]
    assert shlex.split(redriven.stdout.strip())[3:] == [
        "replay", "--run", "nightly", "--job", "j1", "--start", entry_id, "--end", entry_id,
    ]
    assert sync_client.exists(job.result_marker("nightly", f"entry:{entry_id}")) == 0
    assert sync_client.xlen(job.transactions) == 1


@one_server
def test_redrive_unknown_run_rejected(keys, sync_client, cli_env):
    add_invalid_entry(sync_client, keys)
    assert consume(keys, cli_env).returncode == 1
    [(letter_id, letter)] = letters(sync_client, keys)
    marker = keys.result_marker("live", f"entry:{letter.entry_id}")

    named = dlq_cli(keys, cli_env, "redrive", "--run", "nosuchrun", letter_id)
    every = dlq_cli(keys, cli_env, "redrive", "--run", "nosuchrun", "--all")

    assert named.returncode == 2
    assert f"dead letter {letter_id} belongs to run 'live', not 'nosuchrun'" in named.stderr
    assert every.returncode == 2
    assert "runs present: live" in every.stderr
    assert sync_client.xlen(keys.dead_letters) == 1
    assert sync_client.xlen(keys.transactions) == 1
    assert sync_client.get(marker) == letter.entry_id


@one_server
def test_redrive_run_on_empty_stream(keys, cli_env):
    completed = dlq_cli(keys, cli_env, "redrive", "--run", "live", "--all")

    assert completed.returncode == 2
    assert f"{keys.dead_letters} holds no dead letters" in completed.stderr


@one_server
def test_redrive_run_filters_all(redis_url, keys, sync_client, cli_env, orchestrator):
    publish(redis_url, keys, make_transactions(2, prefix="f"))
    assert consume(keys, cli_env).returncode == 0
    asyncio.run(replay_rejected(redis_url, keys, orchestrator))
    add_invalid_entry(sync_client, keys)
    assert consume(keys, cli_env).returncode == 1
    length_before = sync_client.xlen(keys.transactions)

    completed = dlq_cli(keys, cli_env, "redrive", "--all", "--run", "live")

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert f"redrove 1 dead letter onto {keys.transactions}" in completed.stderr
    assert "2 dead letters remain: 2 belong to other runs than live" in completed.stderr
    assert completed.stdout == ""
    assert {letter.run for _, letter in letters(sync_client, keys)} == {"r401"}
    assert sync_client.xlen(keys.transactions) == length_before + 1


@one_server
def test_redrive_named_other_run(redis_url, keys, sync_client, cli_env, orchestrator):
    publish(redis_url, keys, make_transactions(1, prefix="o"))
    asyncio.run(replay_rejected(redis_url, keys, orchestrator))
    [(letter_id, _letter)] = letters(sync_client, keys)

    completed = dlq_cli(keys, cli_env, "redrive", "--run", "live", letter_id)

    assert completed.returncode == 2
    assert "belongs to run 'r401', not 'live'; pass --run r401" in completed.stderr
    assert sync_client.xlen(keys.dead_letters) == 1


@one_server
def test_redrive_replay_entry_gone(redis_url, keys, sync_client, cli_env, orchestrator):
    publish(redis_url, keys, make_transactions(1, prefix="t"))
    asyncio.run(replay_rejected(redis_url, keys, orchestrator))
    [(letter_id, letter)] = letters(sync_client, keys)
    sync_client.xdel(keys.transactions, letter.entry_id)

    named = dlq_cli(keys, cli_env, "redrive", letter_id)
    every = dlq_cli(keys, cli_env, "redrive", "--all")

    assert named.returncode == 1
    assert f"its entry '{letter.entry_id}' is no longer in" in named.stderr
    assert every.returncode == 0, every.stderr[-2000:]
    assert "1 dead letter remains: 1 cannot be redriven" in every.stderr
    assert sync_client.exists(keys.result_marker("r401", letter.transaction_id)) == 1
    assert sync_client.xlen(keys.dead_letters) == 1


@one_server
def test_redrive_same_id_twice_once(keys, sync_client, cli_env):
    add_invalid_entry(sync_client, keys)
    assert consume(keys, cli_env).returncode == 1
    [(letter_id, _letter)] = letters(sync_client, keys)

    completed = dlq_cli(keys, cli_env, "redrive", letter_id, letter_id)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "redrove 1 dead letter" in completed.stderr
    assert sync_client.xlen(keys.transactions) == 2


def test_redrive_keeps_later_marker(sync_client, keys):
    add_invalid_entry(sync_client, keys)
    letter = DeadLetter(
        entry_id="1700000000000-0", stream=keys.transactions, payload={"data": INVALID_DATA},
        reason="invalid entry", error_type="ValidationError", error="merchant: field required",
        first_failure_at="2026-11-01T00:00:00Z", last_failure_at="2026-11-01T00:00:00Z",
    )
    letter_id = sync_client.xadd(keys.dead_letters, {"data": letter.model_dump_json()})
    # The payload's transaction_id got a result from another entry, whose marker contains that entry's id.
    sync_client.set(keys.result_marker("live", "bad-1"), "1700000000999-0")
    sync_client.set(keys.result_marker("live", "entry:1700000000000-0"), "1700000000000-0")

    [new_id] = dlq.redrive(sync_client, keys, [letter_id])

    assert sync_client.xrange(keys.transactions, min=new_id, max=new_id)[0][1] == {"data": INVALID_DATA}
    assert sync_client.get(keys.result_marker("live", "bad-1")) == "1700000000999-0"
    assert sync_client.exists(keys.result_marker("live", "entry:1700000000000-0")) == 0


# Purge


@one_server
def test_purge_lets_same_ids_through(redis_url, keys, sync_client, cli_env, orchestrator, tmp_path):
    transactions = make_transactions(2, prefix="u")
    publish(redis_url, keys, transactions)
    with FaultProxy(orchestrator.url, lambda index: Fault(422)) as proxy:
        rejected = consume(keys, cli_env, "--orchestrator", proxy.url, "--max-attempts", "1")
    assert rejected.returncode == 1, rejected.stderr[-2000:]

    purged = dlq_cli(keys, cli_env, "purge", "--yes")

    assert purged.returncode == 0, purged.stderr[-2000:]
    assert "purged 2 dead letters\n" in purged.stderr
    assert "deleted their 2 outcome markers" in purged.stderr
    for transaction in transactions:
        assert sync_client.exists(keys.result_marker("live", transaction.transaction_id)) == 0

    source = tmp_path / "t2.csv"
    source.write_text("transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n" + "".join(
        f"{t.transaction_id},{t.user_id},{t.merchant},{t.category},{t.amount_usd},{t.mcc},"
        f"{t.timestamp.isoformat().replace('+00:00', 'Z')}\n" for t in transactions
    ))
    published = invoke_cli(["--prefix", keys.prefix, "publish", str(source), "--dedup-window", "0"], cli_env)
    assert published.returncode == 0, published.stderr[-2000:]
    consumed = consume(keys, cli_env)
    assert consumed.returncode == 0, consumed.stderr[-2000:]
    stats = json.loads(consumed.stdout.strip().splitlines()[-1])
    assert stats["results"] == 2
    assert stats["duplicates"] == 0


def test_purge_keeps_later_marker(sync_client, keys):
    add_invalid_entry(sync_client, keys)
    first = DeadLetter(
        entry_id="1700000000000-0", stream=keys.transactions, payload={"data": INVALID_DATA},
        reason="rejected by recommender", error_type="Rejected", error="422", transaction_id="bad-1",
        first_failure_at="2026-11-01T00:00:00Z", last_failure_at="2026-11-01T00:00:00Z",
    )
    second = first.model_copy(update={"entry_id": "1700000000001-0", "transaction_id": "bad-2"})
    sync_client.xadd(keys.dead_letters, {"data": first.model_dump_json()})
    sync_client.xadd(keys.dead_letters, {"data": second.model_dump_json()})
    sync_client.xadd(keys.dead_letters, {"data": "not a letter"})
    sync_client.set(keys.result_marker("live", "bad-1"), "1700000000000-0")
    sync_client.set(keys.result_marker("live", "bad-2"), "1700000000555-0")  # a later outcome's marker

    counts = dlq.purge(sync_client, keys)

    assert counts == dlq.PurgeCounts(letters=3, markers=1)
    assert sync_client.exists(keys.result_marker("live", "bad-1")) == 0
    assert sync_client.get(keys.result_marker("live", "bad-2")) == "1700000000555-0"
    assert sync_client.xlen(keys.dead_letters) == 0


def test_purge_keeps_newer_letters(sync_client, keys):
    letter = DeadLetter(
        entry_id="1700000000000-0", stream=keys.transactions, payload={}, reason="deleted while pending",
        error_type="EntryDeleted", error="trimmed", first_failure_at="2026-11-01T00:00:00Z",
        last_failure_at="2026-11-01T00:00:00Z",
    )
    through = sync_client.xadd(keys.dead_letters, {"data": letter.model_dump_json()})
    newer = sync_client.xadd(keys.dead_letters, {"data": letter.model_dump_json()})

    counts = dlq.purge(sync_client, keys, through_id=through)

    assert counts.letters == 1
    assert [entry_id for entry_id, _ in sync_client.xrange(keys.dead_letters)] == [newer]


@one_server
def test_purge_declined_keeps_markers(keys, sync_client, cli_env):
    add_invalid_entry(sync_client, keys)
    assert consume(keys, cli_env).returncode == 1
    [(_letter_id, letter)] = letters(sync_client, keys)

    declined = dlq_cli(keys, cli_env, "purge", input="n\n")

    assert declined.returncode == 1
    assert sync_client.get(keys.result_marker("live", f"entry:{letter.entry_id}")) == letter.entry_id
    assert sync_client.xlen(keys.dead_letters) == 1


# List


@one_server
def test_list_shows_payload_transaction(keys, sync_client, cli_env):
    add_invalid_entry(sync_client, keys)
    assert consume(keys, cli_env).returncode == 1

    table = invoke_cli(["--prefix", keys.prefix, "dlq", "list"], {**cli_env, "COLUMNS": "250"})
    as_json = dlq_cli(keys, cli_env, "list", "--json")

    assert table.returncode == 0, table.stderr[-2000:]
    assert "┃ run " in table.stdout
    assert re.search(r"│ live\s+│ bad-1\s+│ invalid entry", table.stdout), table.stdout
    [row] = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert row["letter"]["transaction_id"] == "bad-1"
    assert row["letter"]["run"] == "live"


@one_server
def test_list_shows_unreadable_letter(keys, sync_client, cli_env):
    add_invalid_entry(sync_client, keys)
    assert consume(keys, cli_env).returncode == 1
    broken_id = sync_client.xadd(keys.dead_letters, {"data": '{"not": "a letter"}'})

    table = invoke_cli(["--prefix", keys.prefix, "dlq", "list"], {**cli_env, "COLUMNS": "250"})
    as_json = dlq_cli(keys, cli_env, "list", "--json")
    of_live = dlq_cli(keys, cli_env, "list", "--json", "--run", "live")

    assert table.returncode == 0, table.stderr[-2000:]
    assert re.search(rf"│ {broken_id}\s+│ -\s+│ -\s+│ unreadable letter\s+│ missing", table.stdout), table.stdout
    assert re.search(r"│ live\s+│ bad-1\s+│ invalid entry", table.stdout), table.stdout
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert rows[0]["letter"]["transaction_id"] == "bad-1"
    assert rows[1]["id"] == broken_id
    assert rows[1]["unreadable"]["data"] == '{"not": "a letter"}'
    assert rows[1]["unreadable"]["error"].startswith("missing fields: entry_id, stream, payload")
    assert [json.loads(line)["letter"]["transaction_id"] for line in of_live.stdout.splitlines()] == ["bad-1"]


@one_server
def test_redrive_all_keeps_unreadable_letter(keys, sync_client, cli_env):
    add_invalid_entry(sync_client, keys)
    assert consume(keys, cli_env).returncode == 1
    broken_id = sync_client.xadd(keys.dead_letters, {"data": "not json"})

    every = dlq_cli(keys, cli_env, "redrive", "--all")
    named = dlq_cli(keys, cli_env, "redrive", broken_id)

    assert every.returncode == 0, every.stderr[-2000:]
    assert "redrove 1 dead letter" in every.stderr
    assert "1 dead letter remains: 1 cannot be redriven" in every.stderr
    assert named.returncode == 1
    assert f"dead letter {broken_id} cannot be redriven" in named.stderr
    [(_, unreadable)] = [item for item in dlq.list_letter_entries(sync_client, keys) if item[0] == broken_id]
    assert unreadable.error.startswith("invalid JSON: ")
    assert [entry_id for entry_id, _ in sync_client.xrange(keys.dead_letters)] == [broken_id]
    with pytest.raises(ValueError):
        list(dlq.list_dead_letters(sync_client, keys))
