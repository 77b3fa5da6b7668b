"""Settings of one consumer process, with the defaults the CLI shows."""

from __future__ import annotations

from dataclasses import dataclass, field

from rewardpilot.streams import LIVE_RUN, StreamKeys


@dataclass
class ConsumerSettings:
    """How one consumer process reads, recommends and settles entries.

    ``batch_size`` is the XREADGROUP COUNT; ``block_ms`` its BLOCK time.
    ``result_ttl_seconds`` is how long the per-transaction de-duplication
    marker lives; keep it at least as long as the transactions stream's
    retention so that a redelivered entry is still recognised. 0 means no
    expiry: a replay outside a job uses it, because its results stream never
    expires either.
    ``cap_ttl_seconds`` is how long a user's spend under caps lives after its
    last change; None keeps the live run's spend for good and a replay's as
    long as its markers (so without expiry when the marker TTL is 0).
    ``trim_older_than_seconds`` turns on trimming as it goes: every
    ``trim_interval_seconds`` the transactions stream loses entries older
    than that age which every consumer group has read and acknowledged.
    ``partitions`` above 1 reads the partition streams
    ``{base}transactions:p{N}`` under leases of ``lease_ms`` milliseconds
    (``rewardpilot.partitions``); 1 reads the single transactions stream.
    """

    keys: StreamKeys = field(default_factory=StreamKeys)
    run: str = LIVE_RUN
    group: str | None = None
    consumer: str | None = None
    workers: int = 2
    batch_size: int = 500
    block_ms: int = 1000
    drain: bool = False
    wallet: list[str] | None = None
    result_ttl_seconds: int = 30 * 24 * 3600
    cap_ttl_seconds: int | None = None
    visibility_timeout_ms: int = 60_000
    claim_interval_seconds: float = 5.0
    max_deliveries: int = 5
    shutdown_grace_seconds: float = 10.0
    wallet_cache_seconds: float = 5.0
    results_maxlen: int | None = None
    start_id: str = "0"
    end_id: str | None = None
    user_filter: str | None = None
    trim_older_than_seconds: float | None = None
    trim_interval_seconds: float = 60.0
    partitions: int = 1
    lease_ms: int = 10_000

    @property
    def group_name(self) -> str:
        return self.group or self.keys.group(self.run)

    @property
    def results_stream(self) -> str:
        return self.keys.results(self.run)
