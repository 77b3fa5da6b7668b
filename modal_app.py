"""Run RewardPilot Stream on Modal: consumers, autoscaling by lag, the batch endpoint.

Deploy with ``modal deploy modal_app.py`` (see docs/deploy.md). The Modal
secret ``rewardpilot`` supplies ``REDIS_URL``, ``ORCHESTRATOR_API_KEY`` and,
optionally, ``ORCHESTRATOR_URL``; without an orchestrator URL the consumers
and the nightly replay use the in-process rules engine.

Every Modal function is a thin wrapper around a plain function of this module
(``run_consume``, ``run_autoscale``, ``create_batch_app``,
``run_nightly_replay``), so the same code runs locally against any Redis
server. Importing this module needs neither a Modal token nor the network.

Settings (environment variables, all optional):

* ``RP_PREFIX``: prefix of every Redis key (default ``rp:``).
* ``RP_CONSUME_SECONDS``: how long one ``consume`` call reads (default 240,
  below the function timeout of 300 seconds minus the shutdown grace).
* ``RP_CONSUME_WORKERS``: asyncio workers per consumer (default 4).
* ``RP_CONSUMER_BACKLOG``: entries one consumer is expected to work off
  within one ``consume`` call (default 5000).
* ``RP_MAX_CONSUMERS``: most consumers running at once (default 10).
* ``RP_RATE``: shared orchestrator rate limit of the consumers, such as
  ``100/s`` (default none). It caps the nightly replay alone, whose
  orchestrator calls also count against the consumers' shared limit.
* ``RP_BATCH_TIMEOUT_SECONDS``: how long the batch endpoint waits (default 60,
  at most 840).
* ``RP_NIGHTLY_REPLAY``: ``1`` turns the nightly replay on (default off).
* ``RP_LOG_LEVEL``: DEBUG, INFO, WARNING or ERROR (default INFO); log lines
  are JSON on stderr, as the CLI writes them off a terminal.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from datetime import datetime, time as clock_time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import modal
from pydantic import BaseModel, Field

APP_NAME = "rewardpilot-stream"
SECRET_NAME = "rewardpilot"
ROOT = Path(__file__).resolve().parent

if TYPE_CHECKING:
    from consumer.settings import ConsumerSettings
    from rewardpilot.job import JobLifetime

CONSUME_TIMEOUT_SECONDS = 300
SHUTDOWN_GRACE_SECONDS = 20.0
DEFAULT_CONSUME_SECONDS = 240
DEFAULT_WORKERS = 4
DEFAULT_CONSUMER_BACKLOG = 5000
DEFAULT_MAX_CONSUMERS = 10
# How long autoscale counts a spawned consume call that has not registered itself yet.
SPAWNED_CALL_SECONDS = CONSUME_TIMEOUT_SECONDS
DEFAULT_BATCH_TIMEOUT_SECONDS = 60.0
BATCH_FUNCTION_TIMEOUT_SECONDS = 900
# The batch wait must end early enough to publish the batch and respond within the function timeout.
MAX_BATCH_TIMEOUT_SECONDS = BATCH_FUNCTION_TIMEOUT_SECONDS - 60
# Requests one batch_endpoint container serves at once. Each request uses one of the 40
# threads that FastAPI's thread pool (anyio's default limiter) runs sync handlers on.
BATCH_CONCURRENT_REQUESTS = 20
MAX_BATCH_TRANSACTIONS = 10_000
# Entries of the results stream, and of the dead-letter stream, that the batch endpoint reads after
# a marker's entry id to find the earlier outcome of a transaction it does not publish again.
EARLIER_OUTCOME_SCAN_ENTRIES = 10_000
EARLIER_OUTCOME_READ_COUNT = 1000


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer; set it to a whole number such as {default}") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number; set it to seconds such as {default:g}") from None


# Plain functions: what each Modal function does, runnable anywhere.


def consumers_key(prefix: str) -> str:
    """Sorted set of running Modal consumers, scored by the time (ms) each one stops."""
    return f"{prefix}modal:consumers"


def plan_consumers(lag: int, pending: int, running: int, *, per_consumer: int, maximum: int) -> int:
    """Return how many consumers to start for a backlog.

    The rule: ``wanted = min(maximum, ceil((lag + pending) / per_consumer))``
    and the function returns ``wanted - running``, never below 0. Pending entries
    count because a consumer must be running to reclaim them. A drained group
    (lag and pending 0) starts none.
    """
    if per_consumer < 1:
        raise ValueError(f"per_consumer {per_consumer} must be at least 1 entry")
    if maximum < 0:
        raise ValueError(f"maximum {maximum} must be 0 or more consumers")
    if lag < 0 or pending < 0 or running < 0:
        raise ValueError(f"lag {lag}, pending {pending} and running {running} must not be negative")

    backlog = lag + pending
    wanted = min(maximum, math.ceil(backlog / per_consumer))
    return max(0, wanted - running)


def run_consume(url: str, *, prefix: str = "rp:", seconds: float = DEFAULT_CONSUME_SECONDS,
                workers: int = DEFAULT_WORKERS, job: str | None = None, rate: str | None = None,
                grace_seconds: float = SHUTDOWN_GRACE_SECONDS,
                timeout_seconds: float = CONSUME_TIMEOUT_SECONDS, member: str | None = None) -> dict:
    """Run the consumer pool for ``seconds``, then stop it gracefully and return its stats.

    The pool stops reading after ``seconds`` and finishes the batch in hand
    within ``grace_seconds``, so the call ends before ``timeout_seconds``
    and the function timeout never stops a container with unsettled entries.

    While it runs, a live consumer (``job`` None) is registered in
    ``consumers_key(prefix)`` under ``member``, by default the pool's
    consumer name. On Modal the member is the function call id, so the
    registration replaces the entry that ``run_autoscale`` wrote when it
    spawned this call. A job's consumer is not registered, because
    ``run_autoscale`` sizes the live group only.

    With ``job``, the call handles the job as ``rewardpilot consume --job``
    does. It raises ValueError for a job id with no streams under the
    prefix, before it writes anything. Its markers and cap spend live no
    longer than the job's keys. At the end, what it wrote, its results
    stream included, expires with the job.
    """
    if seconds <= 0:
        raise ValueError(f"seconds {seconds} must be more than 0")
    if seconds + grace_seconds >= timeout_seconds:
        raise ValueError(
            f"seconds {seconds} plus the shutdown grace of {grace_seconds} s must stay below the "
            f"function timeout of {timeout_seconds} s; lower seconds"
        )
    if workers < 1:
        raise ValueError(f"workers {workers} must be at least 1")
    return asyncio.run(_consume(url, prefix, seconds, workers, job, rate, grace_seconds, member))


async def _consume(url, prefix, seconds, workers, job, rate, grace_seconds, member) -> dict:
    from consumer.build import CallOptions, build_pool
    from consumer.names import consumer_name
    from consumer.settings import ConsumerSettings
    from rewardpilot.connection import connect_async
    from rewardpilot.partitions import agree_count_async
    from rewardpilot.streams import StreamKeys

    settings = ConsumerSettings(
        keys=StreamKeys(prefix=prefix, job=job), consumer=f"modal-{consumer_name()}",
        workers=workers, shutdown_grace_seconds=grace_seconds,
    )
    # Before agree_count_async, which would store a partition count under a mistyped job id.
    lifetime = _start_job(url, settings) if job is not None else None
    client = connect_async(url, block_ms=settings.block_ms)
    try:
        # Adopt the prefix's partition count, as `rewardpilot consume` does without --partitions.
        settings.partitions = await agree_count_async(client, settings.keys)
        pool = build_pool(client, settings, CallOptions.from_env(rate=rate))
        registry = consumers_key(prefix) if job is None else None
        member = member or pool.name
        if registry is not None:
            stops_at_ms = int((time.time() + seconds + grace_seconds) * 1000)
            await client.zadd(registry, {member: stops_at_ms})

        async def stop_later() -> None:
            await asyncio.sleep(seconds)
            pool.stop()

        timer = asyncio.create_task(stop_later())
        try:
            stats = await pool.run()
        finally:
            timer.cancel()
            if registry is not None:
                await client.zrem(registry, member)
            await pool.recommender.aclose()
    finally:
        await client.aclose()
        if lifetime is not None:
            _end_job(url, settings)
    return {"consumer": pool.name, **stats.as_dict()}


def _start_job(url: str, settings: ConsumerSettings) -> JobLifetime | None:
    """Check that the job exists and cap the marker and cap spend TTLs at its keys' remaining life.

    Returns the job's ``JobLifetime``, or None when its keys never expire.
    These are the steps of ``rewardpilot consume --job``
    (rewardpilot/cli/consume_cmd.py).

    NOTE: ``limit_to_job`` here and ``expire_with_job`` in ``_end_job``
    print their notes and warnings through the CLI's console, as plain text
    on stderr, not as JSON log lines.
    """
    from rewardpilot.cli.consume_cmd import limit_to_job
    from rewardpilot.connection import connect
    from rewardpilot.job import job_lifetime

    client = connect(url)
    try:
        _check_job_exists(client, settings.keys)
        lifetime = job_lifetime(client, settings.keys)
    finally:
        client.close()
    if lifetime is not None:
        settings.result_ttl_seconds = limit_to_job(lifetime, settings.result_ttl_seconds)
        settings.cap_ttl_seconds = settings.result_ttl_seconds
    return lifetime


def _check_job_exists(client, keys) -> None:
    """Raise ValueError naming the job when none of its streams or its partition count exists under the prefix."""
    from rewardpilot.job import job_exists

    if not job_exists(client, keys):
        raise ValueError(f"no job {keys.job!r} under prefix {keys.prefix!r} on this Redis server; pass the job id "
                         "that `rewardpilot run` printed, or no job to consume the live streams")


def _end_job(url: str, settings: ConsumerSettings) -> None:
    """Make what the consumer wrote expire with the job's keys, as ``rewardpilot consume --job`` does at exit."""
    from rewardpilot.cli.consume_cmd import expire_with_job
    from rewardpilot.connection import connect

    client = connect(url)
    try:
        expire_with_job(client, settings.keys, settings)
    finally:
        client.close()


def run_autoscale(url: str, *, prefix: str = "rp:", per_consumer: int = DEFAULT_CONSUMER_BACKLOG,
                  maximum: int = DEFAULT_MAX_CONSUMERS, spawn: Callable[[], str | None]) -> dict:
    """Read the live group's backlog, count running consumers and ``spawn`` the missing ones.

    On a partitioned prefix the backlog is the sum over every partition stream.
    ``spawn`` starts one consumer and returns its Modal function call id, or
    None when it has none. ``Function.spawn`` returns once Modal has queued
    the call, before the container starts, so each returned id is registered
    at once for ``SPAWNED_CALL_SECONDS``. The next run then counts the call
    instead of spawning another for the same backlog.
    """
    from consumer.group import backlog
    from rewardpilot.connection import connect, connect_async
    from rewardpilot.partitions import count_key, partition_streams
    from rewardpilot.streams import StreamKeys

    keys = StreamKeys(prefix=prefix)

    async def measure():
        client = connect_async(url)
        try:
            registry = consumers_key(prefix)
            await client.zremrangebyscore(registry, "-inf", int(time.time() * 1000))
            running = await client.zcard(registry)
            partitions = int(await client.get(count_key(keys)) or 1)
            lag = pending = 0
            for stream in partition_streams(keys, partitions):
                state = await backlog(client, stream, keys.group())
                lag += state.lag
                pending += state.pending
            return lag, pending, running
        finally:
            await client.aclose()

    lag, pending, running = asyncio.run(measure())
    starting = plan_consumers(lag, pending, running, per_consumer=per_consumer, maximum=maximum)
    if starting:
        client = connect(url)
        try:
            for _ in range(starting):
                call_id = spawn()
                if call_id:
                    expires_ms = int((time.time() + SPAWNED_CALL_SECONDS) * 1000)
                    # nx keeps the registration of a call whose container already started.
                    client.zadd(consumers_key(prefix), {call_id: expires_ms}, nx=True)
        finally:
            client.close()
    return {"lag": lag, "pending": pending, "running": running, "started": starting}


def run_nightly_replay(url: str, *, prefix: str = "rp:", enabled: bool, now: datetime | None = None,
                       rate: str | None = None) -> dict:
    """Replay the previous UTC day's transactions as run ``nightly-YYYY-MM-DD``; off unless ``enabled``.

    The replay calls the recommender that ``rewardpilot replay`` calls with
    the same environment: the orchestrator at ``ORCHESTRATOR_URL`` with
    ``ORCHESTRATOR_API_KEY``, or the in-process engine when that is unset.
    ``rate`` (such as ``100/s``) shares the consumers' rate limit.
    """
    now = now or datetime.now(timezone.utc)
    day = (now.astimezone(timezone.utc) - timedelta(days=1)).date()
    start = datetime.combine(day, clock_time(0), tzinfo=timezone.utc)
    end = start + timedelta(days=1)
    if not enabled:
        return {"skipped": "nightly replay is off; set RP_NIGHTLY_REPLAY=1 to turn it on"}

    from consumer.build import CallOptions
    from rewardpilot.replay import replay
    from rewardpilot.streams import StreamKeys

    # Replay bounds are inclusive, so the window ends one millisecond before midnight.
    last = end - timedelta(milliseconds=1)
    summary = replay(url, StreamKeys(prefix=prefix), start=start.isoformat(), end=last.isoformat(),
                     run=f"nightly-{day.isoformat()}", options=CallOptions.from_env(rate=rate))
    return summary.as_dict()


# The batch endpoint.


class BatchRequest(BaseModel):
    """The batch API's request body: one user's transactions."""

    transactions: list[dict] = Field(min_length=1, max_length=MAX_BATCH_TRANSACTIONS)
    user_id: str = Field(min_length=1)


def create_batch_app(url: str, *, prefix: str = "rp:", timeout_seconds: float = DEFAULT_BATCH_TIMEOUT_SECONDS,
                     poll_ms: int = 200):
    """Return a FastAPI app whose ``POST /`` publishes a batch and waits for its results.

    The body is ``{"transactions": [...], "user_id": "..."}``; a transaction
    without ``user_id`` takes the batch's. The batch goes onto the live
    transactions stream, so the live consumers process it, and the endpoint
    reads the results and dead-letter streams until every transaction has an
    outcome or ``timeout_seconds`` pass. Invalid transactions are reported in
    ``errors`` and the valid ones still go through.
    """
    import redis
    from fastapi import FastAPI, HTTPException

    from rewardpilot.connection import connect, redact_safely
    from rewardpilot.logs import get_logger
    from rewardpilot.streams import StreamKeys

    log = get_logger("modal_app")

    if not timeout_seconds > 0:
        raise ValueError(f"timeout_seconds {timeout_seconds} must be more than 0")
    keys = StreamKeys(prefix=prefix)
    app = FastAPI(title="RewardPilot Stream batch endpoint")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/")
    def process_batch(request: BatchRequest) -> dict:
        client = connect(url, block_ms=poll_ms)
        try:
            return _process_batch(client, keys, request.transactions, request.user_id,
                                  timeout_seconds=timeout_seconds, poll_ms=poll_ms)
        # redis-py's ConnectionError (AuthenticationError included) and TimeoutError do not derive from OSError.
        except (OSError, redis.ConnectionError, redis.TimeoutError) as exc:
            reason = _hide_passwords(str(exc) or type(exc).__name__, url)
            log.warning("batch rejected: Redis is unreachable", error=reason, redis_url=redact_safely(url))
            raise HTTPException(503, f"Redis is unreachable: {reason}; retry the batch later") from None
        finally:
            client.close()

    return app


def _validate_batch(rows: list[dict], user_id: str):
    """Split request rows into valid transactions and errors naming each bad row."""
    from pydantic import ValidationError

    from rewardpilot.models import Transaction

    transactions, errors, seen = [], [], set()
    for index, row in enumerate(rows):
        row = {**row}
        row.setdefault("user_id", user_id)
        transaction_id = row.get("transaction_id")
        if row["user_id"] != user_id:
            errors.append({"index": index, "transaction_id": transaction_id,
                           "error": f"user_id {row['user_id']!r} differs from the batch's user_id {user_id!r}; "
                                    "send one user's transactions per batch"})
            continue
        try:
            transaction = Transaction.model_validate(row)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in detail['loc']) or 'transaction'}: "
                f"{detail['msg'].removeprefix('Value error, ')}"
                for detail in exc.errors(include_url=False)
            )
            errors.append({"index": index, "transaction_id": transaction_id,
                           "error": f"invalid transaction: {problems}"})
            continue
        if transaction.transaction_id in seen:
            errors.append({"index": index, "transaction_id": transaction.transaction_id,
                           "error": "duplicate transaction_id within this batch; the first one was kept"})
            continue
        seen.add(transaction.transaction_id)
        transactions.append(transaction)
    return transactions, errors


def _last_id(client, stream: str) -> str:
    newest = client.xrevrange(stream, count=1)
    return newest[0][0] if newest else "0-0"


def _process_batch(client, keys, rows: list[dict], user_id: str, *, timeout_seconds: float, poll_ms: int) -> dict:
    from producer.publisher import Producer
    from rewardpilot.codec import decode_result
    from rewardpilot.models import DeadLetter
    from rewardpilot.money import round_cash

    started = time.perf_counter()
    transactions, errors = _validate_batch(rows, user_id)

    # The cursors are read before the markers: a result written after a marker was found missing
    # comes after them, so the wait below reads it.
    cursors = {keys.results(): _last_id(client, keys.results()), keys.dead_letters: _last_id(client, keys.dead_letters)}
    transactions, processed = _split_processed(client, keys, transactions)
    results, already_processed = [], sorted(processed)
    earlier_results, earlier_errors = _earlier_outcomes(client, keys, processed)
    results.extend(earlier_results)
    errors.extend(earlier_errors)

    producer = Producer(client, keys, max_backlog=None)
    entry_ids = producer.publish_chunk(transactions) if transactions else []
    waiting = set()
    for transaction, entry_id in zip(transactions, entry_ids):
        if entry_id is None:
            # No marker was found above, so the earlier entry had no outcome yet when this request checked.
            errors.append({"transaction_id": transaction.transaction_id,
                           "error": "already published within the de-duplication window by an earlier request, "
                                    "which has no outcome yet; its result will arrive on the results stream, "
                                    "or a dead letter on the dead-letter stream"})
        else:
            waiting.add(transaction.transaction_id)

    deadline = time.monotonic() + timeout_seconds
    while waiting and time.monotonic() < deadline:
        reply = client.xread(cursors, block=poll_ms, count=1000)
        for stream, entries in reply or []:
            stream = stream.decode() if isinstance(stream, bytes) else stream
            for entry_id, fields in entries:
                cursors[stream] = entry_id
                fields = {_text(name): _text(value) for name, value in fields.items()}
                transaction_id = fields.get("transaction_id")
                if transaction_id not in waiting:
                    continue
                waiting.discard(transaction_id)
                if stream == keys.dead_letters:
                    letter = DeadLetter.model_validate_json(fields["data"])
                    errors.append({"transaction_id": transaction_id, "error": f"{letter.reason}: {letter.error}"})
                    continue
                results.append(decode_result(fields).model_dump(mode="json"))

    for transaction_id in sorted(waiting):
        errors.append({"transaction_id": transaction_id,
                       "error": f"timed out after {timeout_seconds} s waiting for a result; "
                                "it may still arrive on the results stream"})

    total = sum((Decimal(result["rewards"]["cash_value_usd"]) for result in results), Decimal("0"))
    elapsed = time.perf_counter() - started
    return {
        "total_transactions": len(rows),
        "successful": len(results),
        "failed": len(errors),
        "total_rewards": str(round_cash(total)),
        "processing_time_seconds": round(elapsed, 3),
        "throughput_tps": round(len(rows) / elapsed, 1) if elapsed > 0 else 0.0,
        "timed_out": bool(waiting),
        "already_processed": already_processed,
        "results": results,
        "errors": errors,
    }


def _split_processed(client, keys, transactions: list) -> tuple[list, dict[str, str]]:
    """Split off the transactions that already have a live outcome marker.

    The consumers would skip those as duplicates, so the batch waits for no
    result of theirs. Returns the transactions to publish, and the
    transactions stream entry id each marker records, by transaction_id.
    The markers outlive the producer's de-duplication window (30 days
    against 24 hours by default), so this catches transactions sent again
    after the window as well.
    """
    from rewardpilot.streams import LIVE_RUN

    if not transactions:
        return [], {}
    markers = client.mget([keys.result_marker(LIVE_RUN, transaction.transaction_id) for transaction in transactions])
    to_publish, processed = [], {}
    for transaction, marker in zip(transactions, markers):
        if marker is None:
            to_publish.append(transaction)
        else:
            processed[transaction.transaction_id] = _text(marker)
    return to_publish, processed


def _earlier_outcomes(client, keys, processed: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """Find the results and dead letters of already processed transactions; return (results, errors).

    A marker's value is the id of the transactions stream entry that was
    settled. Its result or dead letter was written after that entry, so each
    stream is read from the smallest such id, for at most
    ``EARLIER_OUTCOME_SCAN_ENTRIES`` entries. A transaction whose outcome is
    not among them (a later one, or one trimmed away) gets an error that
    names its entry id.
    """
    from rewardpilot.codec import decode_result
    from rewardpilot.models import DeadLetter

    results, errors = [], []
    if not processed:
        return results, errors
    found_results = _scan_for_outcomes(client, keys.results(), processed)
    for transaction_id, fields in found_results.items():
        results.append(decode_result(fields).model_dump(mode="json"))

    remaining = {transaction_id: entry_id for transaction_id, entry_id in processed.items()
                 if transaction_id not in found_results}
    found_letters = _scan_for_outcomes(client, keys.dead_letters, remaining)
    for transaction_id in sorted(remaining):
        entry_id = remaining[transaction_id]
        fields = found_letters.get(transaction_id)
        letter = DeadLetter.model_validate_json(fields["data"]) if fields else None
        if letter is not None and letter.entry_id == entry_id:
            error = (f"already processed by an earlier request and dead-lettered: {letter.reason}: {letter.error}. "
                     "The consumers skip this transaction_id until `rewardpilot dlq redrive` or `dlq purge` "
                     "releases it")
        else:
            error = (f"already processed by an earlier request (transactions stream entry {entry_id}), so it was "
                     f"not published again; its outcome is not among the {EARLIER_OUTCOME_SCAN_ENTRIES:,} entries "
                     "that follow that entry on the results and dead-letter streams")
        errors.append({"transaction_id": transaction_id, "error": error})
    return results, errors


def _scan_for_outcomes(client, stream: str, settled_entries: dict[str, str]) -> dict[str, dict]:
    """Return, by transaction_id, the fields of the first entry of ``stream`` at or after its settled entry id."""
    from rewardpilot.streams import entry_key

    found: dict[str, dict] = {}
    if not settled_entries:
        return found
    start = min(settled_entries.values(), key=entry_key)
    read = 0
    while read < EARLIER_OUTCOME_SCAN_ENTRIES and len(found) < len(settled_entries):
        entries = client.xrange(stream, min=start, count=EARLIER_OUTCOME_READ_COUNT)
        for entry_id, fields in entries:
            fields = {_text(name): _text(value) for name, value in fields.items()}
            transaction_id = fields.get("transaction_id")
            if (transaction_id in settled_entries and transaction_id not in found
                    and entry_key(_text(entry_id)) >= entry_key(settled_entries[transaction_id])):
                found[transaction_id] = fields
        read += len(entries)
        if len(entries) < EARLIER_OUTCOME_READ_COUNT:
            break
        start = "(" + _text(entries[-1][0])
    return found


def _hide_passwords(text: str, url: str) -> str:
    """Return ``text`` with the password of ``url`` and ``REDIS_PASSWORD`` replaced by ``***``."""
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password  # as written in the URL, so possibly percent-encoded
    except ValueError:
        password = None
    hidden = {password, unquote(password)} if password else set()
    if os.environ.get("REDIS_PASSWORD"):
        hidden.add(os.environ["REDIS_PASSWORD"])
    # Longest first, so that a password containing another one is replaced whole.
    for secret in sorted(hidden, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


# The Modal app: thin wrappers around the functions above.
#
# Checked against the modal client 1.6.4 (its source and docstrings) and the
# Modal guide pages named below. None of it has been deployed from here.

app = modal.App(APP_NAME)

# add_local_python_source uploads only *.py files by default (its ``ignore``
# default is NON_PYTHON_FILES in modal/_image.py). The packages also read
# settle.lua, token_bucket.lua and rewardpilot/data/*.json, so the matcher
# keeps the package-data patterns of pyproject.toml as well.
SOURCE_PACKAGES = ("consumer", "producer", "rewardpilot")
SOURCE_FILE_PATTERNS = ("**/*.py", "**/*.lua", "**/*.json", "**/*.yaml")
image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install_from_pyproject(str(ROOT / "pyproject.toml"))
    .add_local_python_source(*SOURCE_PACKAGES, ignore=~modal.FilePatternMatcher(*SOURCE_FILE_PATTERNS))
)
# With required_keys, Modal's server checks that the secret has REDIS_URL
# when it resolves the secret at deploy time (modal/secret.py, Secret.from_name).
secrets = [modal.Secret.from_name(SECRET_NAME, required_keys=["REDIS_URL"])]


def _prefix() -> str:
    return os.environ.get("RP_PREFIX", "rp:")


def _configure_logs() -> None:
    """Log as the CLI does: JSON lines on stderr, at RP_LOG_LEVEL (default INFO).

    Imported as a library, rewardpilot logs through stdlib ``logging`` and
    leaves its set-up to the program. A Modal container is this app's own
    program, so each Modal function configures it before it starts work.
    """
    from rewardpilot import logs

    logs.configure()


def _batch_timeout_seconds() -> float:
    seconds = _env_float("RP_BATCH_TIMEOUT_SECONDS", DEFAULT_BATCH_TIMEOUT_SECONDS)
    if not 0 < seconds <= MAX_BATCH_TIMEOUT_SECONDS:
        raise ValueError(
            f"RP_BATCH_TIMEOUT_SECONDS={seconds:g} must be more than 0 and at most {MAX_BATCH_TIMEOUT_SECONDS} s, "
            f"60 s below the batch_endpoint function timeout of {BATCH_FUNCTION_TIMEOUT_SECONDS} s; lower it"
        )
    return seconds


# Modal stops a preempted container and restarts its call on the same input
# (https://modal.com/docs/guide/preemption). Other consumers reclaim the
# entries the stopped call held after the visibility timeout.
@app.function(image=image, secrets=secrets, timeout=CONSUME_TIMEOUT_SECONDS)
def consume(seconds: int | None = None, workers: int | None = None, job: str | None = None) -> dict:
    """Run one consumer for a bounded time, like ``rewardpilot consume``."""
    _configure_logs()
    return run_consume(
        os.environ["REDIS_URL"], prefix=_prefix(),
        seconds=seconds or _env_int("RP_CONSUME_SECONDS", DEFAULT_CONSUME_SECONDS),
        workers=workers or _env_int("RP_CONSUME_WORKERS", DEFAULT_WORKERS),
        job=job, rate=os.environ.get("RP_RATE") or None,
        # None outside a Modal container, as under consume.local().
        member=modal.current_function_call_id(),
    )


def _spawn_consume() -> str:
    # NOTE: in the modal 1.6.4 source, FunctionCall.object_id here and
    # current_function_call_id() in the started container are both the
    # server's function_call_id. No deployment has shown that they match. If
    # they differ, a spawned call counts twice until its entry expires after
    # SPAWNED_CALL_SECONDS, so autoscale starts fewer consumers meanwhile.
    return consume.spawn().object_id


@app.function(image=image, secrets=secrets, schedule=modal.Period(minutes=1), timeout=60)
def autoscale() -> dict:
    """Start consumers in proportion to the live group's backlog."""
    _configure_logs()
    return run_autoscale(
        os.environ["REDIS_URL"], prefix=_prefix(),
        per_consumer=_env_int("RP_CONSUMER_BACKLOG", DEFAULT_CONSUMER_BACKLOG),
        maximum=_env_int("RP_MAX_CONSUMERS", DEFAULT_MAX_CONSUMERS),
        spawn=_spawn_consume,
    )


# The endpoint writes to the live transactions stream, so it requires a Proxy
# Auth Token in the Modal-Key and Modal-Secret headers
# (https://modal.com/docs/guide/webhook-proxy-auth). A request mostly waits on
# Redis, so one container serves several at once
# (https://modal.com/docs/guide/concurrent-inputs). Modal cuts an HTTP request
# at 150 s and responds with a 303 redirect to a result URL, while the function
# may run up to its own timeout (https://modal.com/docs/guide/webhook-timeouts).
@app.function(image=image, secrets=secrets, timeout=BATCH_FUNCTION_TIMEOUT_SECONDS)
@modal.concurrent(max_inputs=BATCH_CONCURRENT_REQUESTS)
@modal.asgi_app(requires_proxy_auth=True)
def batch_endpoint():
    """Serve the batch API: POST {transactions, user_id}, receive the batch summary and results."""
    _configure_logs()
    return create_batch_app(os.environ["REDIS_URL"], prefix=_prefix(), timeout_seconds=_batch_timeout_seconds())


@app.function(image=image, secrets=secrets, schedule=modal.Cron("0 3 * * *", timezone="UTC"), timeout=3600)
def nightly_replay() -> dict:
    """Replay the previous UTC day at 03:00 UTC, when ``RP_NIGHTLY_REPLAY=1``."""
    _configure_logs()
    return run_nightly_replay(os.environ["REDIS_URL"], prefix=_prefix(),
                              enabled=os.environ.get("RP_NIGHTLY_REPLAY") == "1",
                              rate=os.environ.get("RP_RATE") or None)
