"""Redis key names, all under one configurable prefix (default ``rp:``).

A prefix that ends in a letter or a digit gets a ":" added, as key
namespaces in Redis usually end in one, so ``myapp`` gives
``myapp:transactions``. A prefix that already ends in a separator, such as
``rp:``, ``rp-`` or ``rp/``, is kept as given, and so is the empty prefix.

A *job* (``rewardpilot run FILE``) gets its own transactions, results and
dead-letter streams under ``{prefix}job:{job}:`` so that a batch job neither
mixes with nor is processed by the live pipeline. It also keeps its own cap
state. Wallets, valuations and the rate limiter are shared by every job and
run. A job id is 1 to 128 letters, digits, ".", "_" or "-", starting with a
letter or digit (``check_job_id``), so no job's keys can lie under another job's (``a:b`` under ``a``) and no id
reads as a SCAN pattern.

A *run* names one pass of processing over a transactions stream: the live
consumers are run ``live``; ``rewardpilot replay --run NAME`` is another run
with its own consumer group and results stream, so replays never disturb the
live group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "rp:"
LIVE_RUN = "live"
LIVE_GROUP = "rp-consumers"

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
JOB_ID_RULE = "use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"


class InvalidJobIdError(ValueError):
    """A job id that the key names cannot hold: empty, too long, or with other characters than ``JOB_ID_RULE`` allows."""


def check_job_id(job: str) -> str:
    """Return ``job`` when it is a valid job id; raise ``InvalidJobIdError`` naming the value and the rule."""
    if not isinstance(job, str) or not JOB_ID_PATTERN.fullmatch(job):
        raise InvalidJobIdError(f"job id {job!r} is invalid; {JOB_ID_RULE}")
    return job


def normalize_prefix(prefix: str) -> str:
    """Return ``prefix`` with a ":" added when it ends in a letter or a digit; raise ``TypeError`` for a non-string."""
    if not isinstance(prefix, str):
        raise TypeError(f"key prefix {prefix!r} is a {type(prefix).__name__}, not a string; pass text such as 'rp:'")
    if prefix and prefix[-1].isalnum():
        return prefix + ":"
    return prefix


@dataclass(frozen=True)
class StreamKeys:
    """The key names for one prefix and, optionally, one job.

    ``prefix`` is stored normalized (``normalize_prefix``), so
    ``StreamKeys("myapp")`` equals ``StreamKeys("myapp:")``.
    """

    prefix: str = DEFAULT_PREFIX
    job: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", normalize_prefix(self.prefix))  # the dataclass is frozen
        if self.job is not None:
            check_job_id(self.job)

    @property
    def base(self) -> str:
        return f"{self.prefix}job:{self.job}:" if self.job else self.prefix

    @property
    def transactions(self) -> str:
        return f"{self.base}transactions"

    @property
    def dead_letters(self) -> str:
        return f"{self.base}dead-letters"

    def results(self, run: str = LIVE_RUN) -> str:
        if run == LIVE_RUN:
            return f"{self.base}results"
        return f"{self.base}results:{run}"

    def group(self, run: str = LIVE_RUN) -> str:
        return LIVE_GROUP if run == LIVE_RUN else f"replay:{run}"

    def result_marker(self, run: str, transaction_id: str) -> str:
        """Key whose existence records that a run already published a result."""
        return f"{self.base}done:{run}:{transaction_id}"

    def published_marker(self, transaction_id: str) -> str:
        """Key whose existence records that the producer published a transaction_id."""
        return f"{self.base}published:{transaction_id}"

    # Shared by every job and run.

    def wallet(self, user_id: str) -> str:
        return f"{self.prefix}wallet:{user_id}"

    @property
    def wallet_index(self) -> str:
        return f"{self.prefix}wallets"

    def valuations(self, user_id: str | None = None) -> str:
        return f"{self.prefix}valuations:{user_id}" if user_id else f"{self.prefix}valuations"

    def rate_limit(self, name: str = "orchestrator") -> str:
        return f"{self.prefix}ratelimit:{name}"

    # Scoped to the job and the run.

    def cap_spend(self, user_id: str, run: str = LIVE_RUN) -> str:
        """Key of the hash holding a user's spend under caps, in cents per (card, tally, period) field.

        The live run keeps the user's real cap state. Any other run (a
        replay) rebuilds its own from the entries it processes, so a replay
        never adds to the live state. A job keeps its own as well. Run names
        contain no ":" (``rewardpilot.replay.check_run_name``), so the two
        key forms never collide.
        """
        if run == LIVE_RUN:
            return f"{self.base}caps:{user_id}"
        return f"{self.base}run-caps:{run}:{user_id}"


def entry_key(entry_id: str) -> tuple[int, int]:
    """Return a stream entry id ("1700000000000-3", or bare milliseconds) as a tuple that sorts as Redis orders ids."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def group_lag(info: dict, stream_info: dict | None) -> int | None:
    """Return a group's lag from its XINFO GROUPS ``info``: 0 once it has read the stream's last entry.

    Redis derives ``lag`` from the group's entries-read counter, which can
    be stale. Redis 7.0.15 keeps reporting a lag after XDEL deleted entries
    the group had not read, even once the group has read on to the end
    (Valkey 9.1 does not). XGROUP SETID with a wrong ENTRIESREAD leaves any
    count, and a restart from an AOF file has been seen to do the same. A
    group whose last-delivered-id is at or after the stream's
    last-generated-id has nothing left to read, so its lag is 0 whatever
    Redis reports. That includes a group created after the stream's last
    entry (a replay that starts after it), for which Redis reports None.
    Otherwise this returns Redis's lag, None when Redis cannot compute it
    (after XDEL or trimming ahead of the group). ``stream_info`` is the
    stream's XINFO STREAM reply; callers may skip it when Redis reports 0.
    """
    lag = info.get("lag")
    if stream_info is not None:
        last_delivered = entry_key(_id_text(info.get("last-delivered-id")))
        last_generated = entry_key(_id_text(stream_info.get("last-generated-id")))
        if last_delivered >= last_generated:
            return 0
    return None if lag is None else int(lag)


def _id_text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
