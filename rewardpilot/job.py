"""The main job: publish a file, consume until drained, summarise.

``run_job`` is what ``rewardpilot run FILE`` calls. A job works on its own
streams (``{prefix}job:{job}:``), so the same file can be run again and again
and a job never mixes with the live pipeline.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterable

from consumer.pool import ConsumerPool
from consumer.recommenders import Recommender
from consumer.settings import ConsumerSettings
from consumer.shutdown import install_signal_handlers, remove_signal_handlers
from consumer.stats import PoolStats
from rewardpilot.connection import connect_async
from rewardpilot.money import usd_text
from rewardpilot.partitions import count_key, partition_streams
from rewardpilot.status import escape_glob
from rewardpilot.streams import LIVE_RUN, StreamKeys


def job_exists(client, keys: StreamKeys, run: str = LIVE_RUN) -> bool:
    """Return whether the job of ``keys`` has a results or transactions stream, or a partition count, in Redis.

    A job's streams exist once its run has published, so ``False`` means
    the job id is mistyped or the job's keys expired.
    """
    return bool(client.exists(keys.results(run), keys.transactions, count_key(keys)))


def new_job_id() -> str:
    """Return a job id that sorts by start time: ``YYYYmmdd-HHMMSS-xxxx``."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


@dataclass
class JobSummary:
    """The run summary, with the field names clients of the batch API expect.

    Every duration starts when publishing starts. ``processing_time_seconds``
    and ``consume_seconds`` end at the last settled outcome, and
    ``throughput_tps`` is the processed transactions over that time.
    ``wall_seconds`` also counts the wait after the last outcome until the
    pool found the group drained, up to one XREADGROUP block.
    ``already_processed`` counts published transactions that got no outcome
    in this run because the run already had one for them (their
    de-duplication markers existed), so they have no result from this run.
    ``already_published`` counts rows whose publish marker existed, so
    this run did not add them to the stream again: an earlier ``run`` or
    ``publish --job`` of the same job id published them (with ``--live``,
    an earlier publish to the live streams). The publish step counts them as
    its ``duplicates``, and the run summary counts them here only. They are
    part of ``total_transactions``, and those that the earlier run processed
    count in none of ``successful``, ``failed`` and ``already_processed``,
    so the three add up to less than the total. ``total_rewards`` covers
    this run's results only.
    """

    job: str
    total_transactions: int
    successful: int
    failed: int
    already_processed: int
    total_rewards: Decimal
    processing_time_seconds: float
    throughput_tps: float
    publish_seconds: float
    consume_seconds: float
    wall_seconds: float = 0.0
    already_published: int = 0
    consumer: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "job": self.job,
            "total_transactions": self.total_transactions,
            "already_published": self.already_published,
            "successful": self.successful,
            "failed": self.failed,
            "already_processed": self.already_processed,
            "total_rewards": usd_text(self.total_rewards),
            "processing_time_seconds": round(self.processing_time_seconds, 3),
            "throughput_tps": round(self.throughput_tps, 1),
            "publish_seconds": round(self.publish_seconds, 3),
            "consume_seconds": round(self.consume_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "consumer": self.consumer,
        }


async def consume_until_drained(
    url: str,
    settings: ConsumerSettings,
    *,
    recommender: Recommender | None = None,
    on_progress: Callable[[PoolStats], None] | None = None,
    handle_signals: bool = False,
) -> PoolStats:
    """Run one consumer pool in drain mode and return its stats."""
    settings.drain = True
    client = connect_async(url, block_ms=settings.block_ms)
    pool = ConsumerPool(client, settings, recommender)
    if handle_signals:
        install_signal_handlers(pool)

    async def report() -> None:
        while True:
            on_progress(pool.stats)
            await asyncio.sleep(0.2)

    reporter = asyncio.create_task(report()) if on_progress else None
    try:
        return await pool.run()
    finally:
        if reporter:
            reporter.cancel()
            on_progress(pool.stats)
        if handle_signals:
            remove_signal_handlers()
        await pool.recommender.aclose()
        await client.aclose()


def seconds_to_last_outcome(stats: PoolStats, started: float, ended: float) -> float:
    """Return the seconds from ``started`` to the pool's last settled outcome, or to ``ended`` when none settled.

    ``started`` and ``ended`` are ``time.monotonic()`` readings, like
    ``stats.last_settled_at``. The drain check that stops the pool waits up
    to one XREADGROUP block after the last outcome, and that wait is left out.
    """
    end = ended if stats.last_settled_at is None else stats.last_settled_at
    return end - started


def summarise(job: str, published: int, stats: PoolStats, publish_seconds: float,
              consume_seconds: float, wall_seconds: float, already_published: int = 0) -> JobSummary:
    """Build the summary from durations that start when publishing starts.

    ``consume_seconds`` ends at the last settled outcome (as
    ``seconds_to_last_outcome`` computes it) and ``wall_seconds`` when the
    pool stopped. The throughput counts the transactions the pool processed,
    fewer than ``published`` when a signal stopped the run early.

    ``stats.duplicates`` also counts redeliveries of entries that this run
    settled itself, so ``already_processed`` is capped at the published
    transactions that have neither a result nor a dead letter.
    ``published`` counts the entries this run added to the stream, and
    ``already_published`` the publish step's duplicates: rows already in
    the job's stream from an earlier run of it.
    """
    processed = stats.results + stats.dead_letters + stats.duplicates
    without_outcome = max(0, published - stats.results - stats.dead_letters)
    return JobSummary(
        job=job,
        total_transactions=published + already_published,
        already_published=already_published,
        successful=stats.results,
        failed=stats.dead_letters,
        already_processed=min(stats.duplicates, without_outcome),
        total_rewards=stats.total_rewards_usd,
        processing_time_seconds=consume_seconds,
        throughput_tps=processed / consume_seconds if consume_seconds > 0 else 0.0,
        publish_seconds=publish_seconds,
        consume_seconds=consume_seconds,
        wall_seconds=wall_seconds,
        consumer=stats.as_dict(),
    )


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - started


DEFAULT_JOB_KEEP_SECONDS = 30 * 24 * 60 * 60  # the default of ``run --keep`` (30d)


def keep_key(keys: StreamKeys) -> str:
    """Return the key that stores a job's ``--keep`` in seconds and expires together with the job's streams."""
    return f"{keys.base}keep"


def record_keep(client, keys: StreamKeys, seconds: int) -> None:
    """Store the job's ``--keep`` so that later commands on the job (``consume --job``) can respect it."""
    client.set(keep_key(keys), int(seconds), ex=int(seconds))


def run_wallet_key(keys: StreamKeys) -> str:
    """Return the key that stores the cards of a job's ``run --wallet``, as a JSON list of card ids."""
    return f"{keys.base}run-wallet"


def record_run_wallet(client, keys: StreamKeys, cards: list[str] | None, seconds: int) -> None:
    """Store the cards of ``run --wallet`` for the job's later ``report --job``, or delete them when none were given.

    The record expires with the job (``seconds`` is its ``--keep``). The
    last run of a job id decides: a later run without ``--wallet`` removes
    the record, because its consumers judge users without a stored wallet
    against the whole catalog.
    """
    if cards:
        client.set(run_wallet_key(keys), json.dumps(cards), ex=int(seconds))
    else:
        client.delete(run_wallet_key(keys))


def stored_run_wallet(client, keys: StreamKeys) -> list[str] | None:
    """Return the cards the job's ``run --wallet`` stored, or None when it stored none or they expired.

    A record that is not a JSON list of strings (written by hand, say) counts
    as none, so the report falls back to the whole catalog and warns.
    """
    if keys.job is None:
        return None
    raw = client.get(run_wallet_key(keys))
    if raw is None:
        return None
    try:
        cards = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(cards, list) or not cards or not all(isinstance(card, str) for card in cards):
        return None
    return cards


@dataclass(frozen=True)
class JobLifetime:
    """The remaining life of a job's keys: the ``--keep`` its run recorded (None if none) and the seconds left."""

    keep_seconds: int | None
    remaining_seconds: int


def job_lifetime(client, keys: StreamKeys) -> JobLifetime | None:
    """Return the time left until the job's keys expire, or None when they do not expire.

    The time left is the shorter TTL of the ``--keep`` record and the
    transactions stream. A job run before ``run`` stored the record has
    only the stream's TTL. The live streams (``keys.job`` None) never
    expire.
    """
    if keys.job is None:
        return None
    with client.pipeline(transaction=False) as pipe:
        pipe.get(keep_key(keys))
        pipe.pttl(keep_key(keys))
        pipe.pttl(keys.transactions)
        recorded, keep_ttl_ms, stream_ttl_ms = pipe.execute()
    # PTTL is -2 for a missing key and -1 for a key without expiry.
    expiring = [ttl for ttl in (keep_ttl_ms, stream_ttl_ms) if ttl > 0]
    if not expiring:
        return None
    keep_seconds = int(recorded) if recorded is not None and keep_ttl_ms > 0 else None
    return JobLifetime(keep_seconds, max(1, math.ceil(min(expiring) / 1000)))


def expire_job(client, keys: StreamKeys, seconds: int, partitions: int = 1,
               runs: Iterable[str] = (LIVE_RUN,)) -> list[str]:
    """Make a job's streams and its records expire in ``seconds``; return the keys that exist.

    The records are the partition count, the ``--keep`` and the run wallet.

    ``runs`` names the runs whose results streams expire too. The consumer
    groups live in the transactions stream, so they expire with it. This
    sets no other key of the job: markers, cap spend and replay streams keep
    the TTL they were written with. ``expire_job_keys`` sets every key.
    """
    names = [keys.transactions, *(keys.results(run) for run in runs), keys.dead_letters, count_key(keys),
             keep_key(keys), run_wallet_key(keys)]
    if partitions > 1:
        names += partition_streams(keys, partitions)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.expire(name, seconds)
        replies = pipe.execute()
    return [name for name, expired in zip(names, replies) if expired]


# The kinds of key under a job's base (``{prefix}job:{job}:``), named by the text before the next ":".
# Leases are renewed by their holders every few seconds, so the job's expiry may shorten them but
# never lengthens them. A killed holder's lease must still run out within seconds.
JOB_KEY_KINDS = frozenset({
    "transactions", "results", "dead-letters", "done", "published", "caps", "run-caps", "keep", "partitions",
    "queue", "run-wallet",
})
LEASE_KEY_KINDS = frozenset({"lease", "consumer-name", "replay-lock"})
EXPIRE_CHUNK = 1000  # keys per SCAN call (its COUNT) and per pipeline of EXPIRE commands


def expire_job_keys(client, keys: StreamKeys, seconds: int, *, only_shorten: bool = False,
                    chunk: int = EXPIRE_CHUNK) -> int:
    """Give every key of a job the expiry ``seconds``; return how many keys got it.

    One SCAN pass with MATCH ``{prefix}job:{job}:*`` finds the keys, and each
    chunk of them gets EXPIRE in one pipeline, so memory stays bounded by
    ``chunk`` names. That covers the streams (a replay's too), the result
    and publish markers, the cap spend and the ``--keep`` record. SCAN visits
    every key of the database, not only the job's, so the pass takes time in
    proportion to the database's size (docs/delivery.md gives a measurement).

    With ``only_shorten``, EXPIRE gets LT, so no key outlives ``seconds`` but
    a key that expires sooner keeps its TTL (a key without TTL gets it). The
    leases in ``LEASE_KEY_KINDS`` always get LT. A key that expires or is
    deleted during the pass is not counted.

    Job ids cannot contain ":" (``check_job_id``), so no other job's keys
    lie under this job's base. Keys whose next name part is not a kind in
    ``JOB_KEY_KINDS`` or ``LEASE_KEY_KINDS`` are left alone all the same,
    for keys written under ids from before that check.

    Raises ValueError for a live ``keys`` (no job), whose keys never expire,
    and for ``seconds`` or ``chunk`` below 1. Requires Redis 7.0 or later
    (EXPIRE LT).
    """
    if keys.job is None:
        raise ValueError("keys has no job: the live streams never expire; pass StreamKeys(prefix, job=JOB_ID)")
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
        raise ValueError(f"seconds must be a whole number of 1 or more, got {seconds!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a whole number of 1 or more, got {chunk!r}")

    base = keys.base
    expired = 0
    batch: list[tuple[bytes | str, bool]] = []  # (key name, EXPIRE with LT)
    for name in client.scan_iter(match=escape_glob(base) + "*", count=chunk):
        kind = _key_kind(name, base)
        if kind in JOB_KEY_KINDS or kind in LEASE_KEY_KINDS:
            batch.append((name, only_shorten or kind in LEASE_KEY_KINDS))
        if len(batch) >= chunk:
            expired += _expire_batch(client, batch, seconds)
            batch = []
    if batch:
        expired += _expire_batch(client, batch, seconds)
    return expired


def _key_kind(name: bytes | str, base: str) -> str:
    """Return the part of a key name after ``base`` up to the next ":", such as ``done`` or ``transactions``."""
    text = name.decode("utf-8", errors="replace") if isinstance(name, bytes) else name
    return text[len(base):].partition(":")[0]


def _expire_batch(client, batch: list[tuple[bytes | str, bool]], seconds: int) -> int:
    with client.pipeline(transaction=False) as pipe:
        for name, shorten_only in batch:
            pipe.expire(name, seconds, lt=shorten_only)
        replies = pipe.execute()
    return sum(1 for reply in replies if reply)


def publish_marker_seconds(requested_seconds: int | None, job_remaining_seconds: int) -> int:
    """Return the TTL in seconds of the publish markers written to a job's stream, where 0 turns the check off.

    The markers of ``publish --job`` live as long as the job's keys
    (``job_remaining_seconds``), so publishing the same rows to the job
    again skips them until the job expires. A ``requested_seconds`` (``--dedup-window``)
    can shorten that, but never lengthen it: a marker that outlived the job
    would skip the rows of a new job under the same id.
    """
    if requested_seconds is None:
        return job_remaining_seconds
    if requested_seconds == 0:
        return 0
    return min(requested_seconds, job_remaining_seconds)


def job_keys(prefix: str, job: str | None, live: bool) -> StreamKeys:
    return StreamKeys(prefix=prefix) if live else StreamKeys(prefix=prefix, job=job)


def default_output(path: Path) -> Path:
    return path.with_suffix(".results.jsonl")
