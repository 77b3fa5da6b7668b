"""A snapshot of the pipeline: streams, consumer groups, consumers, dead letters."""

from __future__ import annotations

import re
import shlex
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import redis

from consumer.group import group_lag
from consumer.ratelimit.redis_bucket import read_bucket_state
from rewardpilot.partitions import count_key, lease_key, partition_streams, streams_beyond
from rewardpilot.streams import DEFAULT_PREFIX, LIVE_RUN, StreamKeys

# The key of a job's own results count in a snapshot's ``results``. The job's
# consumer writes them as run ``live``, but to the job's stream, not the live one.
JOB_RESULTS = "job"

# The rate limit counts as active while its bucket changed within this many
# seconds. The bucket stays in Redis until its TTL (10 minutes after its last
# use by default), so without this window status would show a rate no consumer uses.
RATE_LIMIT_ACTIVE_SECONDS = 60.0


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_ids_age_ms(entry_id: str, now_ms: int) -> int:
    return max(0, now_ms - int(entry_id.split("-", 1)[0]))


def stream_status(client: redis.Redis, stream: str) -> dict:
    """Return a stream's length and, per consumer group, lag, pending and consumers.

    A group's lag is 0 once it has read the stream's last entry, even when
    XINFO GROUPS reports more, and None when Redis cannot compute it (see
    ``consumer.group.group_lag``).
    """
    try:
        length = client.xlen(stream)
        groups = client.xinfo_groups(stream) if length or client.exists(stream) else []
    except redis.ResponseError:
        return {"stream": stream, "length": 0, "groups": []}

    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    # Read once, and only when a group's lag from Redis is above 0 or unknown, since that one may be stale.
    stream_info = None
    if any(info.get("lag") != 0 for info in groups):
        try:
            stream_info = client.xinfo_stream(stream)
        except redis.ResponseError:  # deleted since XINFO GROUPS, so Redis's lags are shown as they were
            pass
    described = []
    for info in groups:
        name = _text(info["name"])
        pending = int(info.get("pending", 0))
        # The oldest pending entry's age counts from when it was added to the
        # stream, and its idle time from when it was last delivered to a consumer.
        oldest_age_ms = None
        oldest_idle_ms = None
        if pending:
            oldest = client.xpending_range(stream, name, min="-", max="+", count=1)
            if oldest:
                oldest_age_ms = _stream_ids_age_ms(_text(oldest[0]["message_id"]), now_ms)
                oldest_idle_ms = int(oldest[0]["time_since_delivered"])
        consumers = [
            {"name": _text(c["name"]), "pending": int(c["pending"]), "idle_ms": int(c["idle"])}
            for c in client.xinfo_consumers(stream, name)
        ]
        described.append({
            "name": name,
            "lag": group_lag(info, stream_info),
            "pending": pending,
            "oldest_pending_age_ms": oldest_age_ms,
            "oldest_pending_idle_ms": oldest_idle_ms,
            "last_delivered_id": _text(info.get("last-delivered-id")),
            "consumers": consumers,
        })
    return {"stream": stream, "length": length, "groups": described}


def collect_status(client: redis.Redis, keys: StreamKeys, runs: list[str] | None = None) -> dict:
    """Return the status of the transactions, results and dead-letter streams and the rate limit.

    ``partitions`` lists each partition stream with its lease holder per
    group; it is empty when the prefix uses the single transactions stream.
    ``transactions_total`` counts the entries of both. The rate limit's
    figures keep nine significant digits, without float noise such as
    2.9870894000000003.
    ``results`` counts each run's results. For a job (``keys.job`` set), the
    job's own results are under ``JOB_RESULTS`` instead of ``live``, and
    ``job_expiry`` says when the job's keys expire (see ``job_expiry``).
    ``stranded`` lists the transactions streams that the stored partition
    count leaves out but that contain entries the live group has not settled,
    and ``stranded_warning`` says how to process them (None when there are
    none; see ``stranded_streams``).
    """
    runs = runs or [LIVE_RUN]
    now = time.time()
    transactions = stream_status(client, keys.transactions)
    partitions = partitions_status(client, keys)
    count = len(partitions) or 1  # partitions_status lists no partition when the stored count is 1 or none
    stranded = stranded_streams(client, keys, count, transactions)
    return {
        "time": now,
        "transactions": transactions,
        "partitions": partitions,
        "stranded": stranded,
        "stranded_warning": stranded_warning(keys, count, stranded),
        # With partitions the entries are on the partition streams, and the base stream is empty.
        "transactions_total": transactions["length"] + sum(partition["length"] for partition in partitions),
        "results": {results_label(keys, run): client.xlen(keys.results(run)) for run in runs},
        "dead_letters": client.xlen(keys.dead_letters),
        "rate_limit": rate_limit_status(client, keys),
        "job_expiry": job_expiry(client, keys, now),
    }


def job_expiry(client: redis.Redis, keys: StreamKeys, now: float) -> dict | None:
    """Return when a job's keys expire, or None for the live streams and for a job whose keys do not expire.

    ``remaining_seconds`` is the time left from ``now`` (a Unix time),
    ``expires_at`` that moment in UTC (ISO 8601, whole seconds), and
    ``keep_seconds`` the ``run --keep`` the job recorded, or None when it
    recorded none (``rewardpilot.job.job_lifetime``).
    """
    if keys.job is None:
        return None
    from rewardpilot.job import job_lifetime  # here, because rewardpilot.job imports this module

    lifetime = job_lifetime(client, keys)
    if lifetime is None:
        return None
    expires_at = datetime.fromtimestamp(now, timezone.utc) + timedelta(seconds=lifetime.remaining_seconds)
    return {
        "remaining_seconds": lifetime.remaining_seconds,
        "expires_at": expires_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "keep_seconds": lifetime.keep_seconds,
    }


def results_label(keys: StreamKeys, run: str) -> str:
    """Return the key of ``run``'s count in a snapshot's ``results``: ``JOB_RESULTS`` for a job's own results."""
    return JOB_RESULTS if keys.job is not None and run == LIVE_RUN else run


def partitions_status(client: redis.Redis, keys: StreamKeys) -> list[dict]:
    """Return every partition stream's status, each group with its lease holder (None when free)."""
    stored = client.get(count_key(keys))
    count = int(stored) if stored is not None else 1
    if count == 1:
        return []
    described = []
    for partition, stream in enumerate(partition_streams(keys, count)):
        status = stream_status(client, stream)
        for group in status["groups"]:
            holder = client.get(lease_key(keys, group["name"], partition))
            group["lease_holder"] = _text(holder) if holder is not None else None
        described.append({"partition": partition, **status})
    return described


def stranded_streams(client: redis.Redis, keys: StreamKeys, count: int, transactions: dict) -> list[dict]:
    """Return the status of each transactions stream outside ``count`` partitions that contains unsettled entries.

    Those are the partition streams beyond ``count`` (every partition stream
    when ``count`` is 1), and with several partitions the single stream
    ``transactions``, whose status is given. A producer that kept routing by
    an older count leaves entries there, and no consumer started with
    ``count`` partitions reads them. A stream counts when it has entries and
    the live group is missing from it, has a lag above 0 or unknown (after
    XDEL or trimming), or has pending entries. Streams whose every entry was
    settled, such as those left after a drained count change, are not listed.
    Finding them takes one EXISTS over the ``MAX_PARTITIONS`` possible names,
    and one pipeline when some exist, so no SCAN of the keyspace.
    """
    candidates = [] if count == 1 else [transactions]
    names = streams_beyond(keys, count)
    if client.exists(*names):
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(name)
            found = pipe.execute()
        candidates += [stream_status(client, name) for name, exists in zip(names, found) if exists]
    return [stream for stream in candidates if _unsettled(stream, keys.group())]


def _unsettled(stream: dict, group: str) -> bool:
    """Return whether a stream status has entries that ``group`` has not read and acknowledged, or may have."""
    if not stream["length"]:
        return False
    for info in stream["groups"]:
        if info["name"] == group:
            return info["lag"] is None or int(info["lag"]) > 0 or info["pending"] > 0
    return True


def stranded_warning(keys: StreamKeys, count: int, stranded: list[dict]) -> str | None:
    """Return the warning about stranded streams with the steps that get their entries processed, or None."""
    if not stranded:
        return None
    key = count_key(keys)
    entries = sum(stream["length"] for stream in stranded)
    names = ", ".join(stream["stream"] for stream in stranded)
    # A consumer reads partitions p0 to p{N-1} for --partitions N, and the single stream for 1.
    drain_counts = []
    indexes = [int(stream["stream"].rsplit(":p", 1)[1]) for stream in stranded if stream["stream"] != keys.transactions]
    if indexes:
        drain_counts.append(max(indexes) + 1)
    if any(stream["stream"] == keys.transactions for stream in stranded):
        drain_counts.append(1)
    prefix = "" if keys.prefix == DEFAULT_PREFIX else f" --prefix {shlex.quote(keys.prefix)}"
    job = "" if keys.job is None else f" --job {shlex.quote(keys.job)}"
    commands = [f"rewardpilot{prefix} consume{job} --partitions {drain} --drain" for drain in drain_counts]
    steps = ", then ".join(f"delete {key} and run `{command}`" for command in commands)
    return (
        f"{names} ({entries} entries) contain entries the live consumer group has not settled, but they lie outside "
        f"the {count} partition(s) stored in {key}, so no consumer started with that count reads them. A producer "
        f"routed them by an older partition count. To process them: stop publishing and let the consumers "
        f"finish, {steps}. Then delete {key} again, start the consumers with --partitions {count}, and restart "
        f"any producer that still routes by the old count"
    )


def _significant(value: float) -> float:
    return float(f"{value:.9g}")


def rate_limit_status(client: redis.Redis, keys: StreamKeys) -> dict | None:
    """Return the shared orchestrator rate limit in tokens per second, or None when its bucket has expired.

    ``tokens`` is as of the last call. ``active`` is False when no consumer
    changed the bucket within ``RATE_LIMIT_ACTIVE_SECONDS``: the rates are
    then the last ones used. The bucket is shared by the live consumers,
    replays and jobs under the prefix, so it is the same for every ``keys.job``.
    """
    state = read_bucket_state(client, keys.rate_limit())
    if state is None:
        return None
    return {
        "configured_rate": _significant(state.configured_rate),
        "effective_rate": _significant(state.effective_rate),
        "tokens": _significant(state.tokens),
        "burst": state.burst,
        "idle_seconds": state.idle_seconds,
        "active": state.idle_seconds <= RATE_LIMIT_ACTIVE_SECONDS,
    }


RATE_WINDOW_SECONDS = 60.0


def entries_added(client: redis.Redis, stream: str) -> int:
    """Return how many entries were ever added to ``stream`` (XINFO STREAM entries-added, Redis 7.0+).

    Unlike XLEN this count does not drop when the stream is trimmed, so two
    readings give a rate. A stream that does not exist yet counts 0.
    """
    try:
        info = client.xinfo_stream(stream)
    except redis.ResponseError:
        return 0
    return int(info.get("entries-added", info.get(b"entries-added", 0)))


@dataclass(frozen=True)
class RateReading:
    """Results per second, averaged over ``seconds`` up to the latest reading."""

    per_second: float
    seconds: float


class ResultRate:
    """Results per second over the last minute, from readings of a results stream's entries-added.

    ``add`` returns the rate between the oldest reading still inside the
    window and the new one, or ``None`` after the first reading, since one
    reading gives no rate. Until the first reading is ``window_seconds``
    old, the rate is the average since that first reading, over fewer
    seconds than the window, and ``RateReading.seconds`` gives how many.
    """

    def __init__(self, window_seconds: float = RATE_WINDOW_SECONDS) -> None:
        self.window_seconds = window_seconds
        self._readings: deque[tuple[float, int]] = deque()

    def add(self, at: float, added: int) -> RateReading | None:
        """Record that ``added`` entries existed at monotonic time ``at``; return the rate, if known."""
        self._readings.append((at, added))
        while len(self._readings) > 2 and at - self._readings[1][0] >= self.window_seconds:
            self._readings.popleft()
        first_at, first_added = self._readings[0]
        if at <= first_at:
            return None
        return RateReading(per_second=max(0, added - first_added) / (at - first_at), seconds=at - first_at)

    def sample(self, client: redis.Redis, stream: str) -> RateReading | None:
        return self.add(time.monotonic(), entries_added(client, stream))


JOB_SCAN_BATCH = 1000
# NOTE: a guessed limit. 1,000 SCAN calls of COUNT 1,000 examine about a million
# keys, an estimated second or two against a local server. A larger keyspace is
# scanned only in part, and find_jobs then returns ``complete`` False.
JOB_SCAN_MAX_CALLS = 1000

# A job's streams, after ``{prefix}job:``: ``{job}:transactions`` (``:transactions:pN``
# when partitioned), ``{job}:results`` and ``{job}:dead-letters``. A replay's
# ``results:RUN`` stream is left out, because the job's own streams exist beside it.
_JOB_STREAM = re.compile(r"^(?P<job>.+):(?P<stream>transactions(?::p\d+)?|results|dead-letters)$")
# The stream read for a job's recency, best first: results get the job's last entries.
_RECENCY_SOURCES = ("results", "transactions", "dead-letters")


def live_streams_empty(snapshot: dict) -> bool:
    """Return True when a snapshot's transactions (every partition), results and dead-letter streams have no entries."""
    return (
        snapshot["transactions"]["length"] == 0
        and all(partition["length"] == 0 for partition in snapshot["partitions"])
        and not any(snapshot["results"].values())
        and snapshot["dead_letters"] == 0
    )


def escape_glob(text: str) -> str:
    """Escape the characters that SCAN MATCH reads as a pattern, so ``text`` matches only itself."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def find_jobs(client: redis.Redis, prefix: str, *, limit: int, max_scan_calls: int = JOB_SCAN_MAX_CALLS) -> dict:
    """Find the ``rewardpilot run`` jobs under ``prefix`` by their streams, with SCAN.

    Returns ``count`` (the jobs found), ``recent`` (up to ``limit`` job ids,
    newest last stream entry first) and ``complete`` (False when the scan
    stopped after ``max_scan_calls`` SCAN calls, so more jobs may exist).
    """
    job_prefix = f"{prefix}job:"
    sources: dict[str, tuple[int, str]] = {}  # job id -> (rank in _RECENCY_SOURCES, stream)
    cursor = 0
    calls = 0
    while True:
        cursor, names = client.scan(cursor=cursor, match=escape_glob(job_prefix) + "*", count=JOB_SCAN_BATCH,
                                    _type="stream")
        calls += 1
        for raw in names:
            name = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
            match = _JOB_STREAM.match(name[len(job_prefix):]) if name.startswith(job_prefix) else None
            if match is None:
                continue
            stream = match["stream"]
            rank = _RECENCY_SOURCES.index(stream) if stream in _RECENCY_SOURCES else len(_RECENCY_SOURCES)
            known = sources.get(match["job"])
            if known is None or rank < known[0]:
                sources[match["job"]] = (rank, name)
        if int(cursor) == 0 or calls >= max_scan_calls:
            break

    jobs = list(sources)
    with client.pipeline(transaction=False) as pipe:
        for job in jobs:
            pipe.xinfo_stream(sources[job][1])
        infos = pipe.execute(raise_on_error=False)
    last_entry_ms = {job: _last_generated_ms(info) for job, info in zip(jobs, infos)}
    jobs.sort(key=lambda job: (last_entry_ms[job], job), reverse=True)
    return {"count": len(jobs), "recent": jobs[:limit], "complete": int(cursor) == 0}


def _last_generated_ms(info) -> int:
    """Return the time part of a stream's last-generated-id from XINFO STREAM, or 0 when the call failed."""
    if not isinstance(info, dict):  # the stream expired or was deleted after the scan
        return 0
    last_id = info.get("last-generated-id", info.get(b"last-generated-id"))
    if last_id is None:
        return 0
    return int(_text(last_id).split("-", 1)[0])
