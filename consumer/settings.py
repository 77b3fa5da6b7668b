"""Settings of one consumer process, with the defaults the CLI shows, checked when built."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from rewardpilot.partitions import MAX_PARTITIONS
from rewardpilot.streams import LIVE_RUN, StreamKeys

# A run name other than the live run's: it becomes part of key and group
# names (``results:NAME``, ``replay:NAME``), so it contains no ":" or glob
# characters. ``rewardpilot.replay.check_run_name`` uses the same pattern.
RUN_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RUN_NAME_RULE = "use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"

# (minimum, maximum) of each whole-number setting; None is no bound. The
# bounds match the options of `rewardpilot consume`, except where noted.
INT_LIMITS: dict[str, tuple[int, int | None]] = {
    "workers": (1, 256),
    "batch_size": (1, 10_000),
    "block_ms": (1, 60_000),
    "max_deliveries": (1, None),
    # The CLI's --visibility-timeout takes 0.01 s or more; 1 ms lets tests claim at once.
    "visibility_timeout_ms": (1, None),
    "result_ttl_seconds": (0, None),  # 0: markers without expiry
    "partitions": (1, MAX_PARTITIONS),
    "lease_ms": (100, None),  # --lease 0.1 s
}
OPTIONAL_INT_LIMITS: dict[str, tuple[int, int | None]] = {
    "cap_ttl_seconds": (0, None),
    "results_maxlen": (1, None),
}
# Settings in seconds: True when 0 is allowed, False when they must be above 0.
SECONDS_ZERO_ALLOWED: dict[str, bool] = {
    "shutdown_grace_seconds": True,
    "wallet_cache_seconds": True,
    "claim_interval_seconds": False,
    "trim_interval_seconds": False,
}


class InvalidSettingsError(ValueError):
    """A ``ConsumerSettings`` field has a value the consumer cannot work with.

    ``field`` names the setting, ``value`` is the value it was given and
    ``rule`` describes the valid values.
    """

    def __init__(self, field_name: str, value: object, rule: str):
        self.field = field_name
        self.value = value
        self.rule = rule
        super().__init__(f"ConsumerSettings.{field_name}={value!r} is invalid: {rule}")


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

    Building the settings runs ``check``, which raises ``InvalidSettingsError``
    (a ValueError) naming the first invalid field, its value and the valid
    range. ``ConsumerPool`` and ``replay_async`` check again, for fields
    changed after the settings were built.
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

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise InvalidSettingsError for the first field outside its valid range."""
        for name, (low, high) in INT_LIMITS.items():
            _check_int(name, getattr(self, name), low, high)
        for name, (low, high) in OPTIONAL_INT_LIMITS.items():
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, low, high, unset="or None")
        for name, zero_allowed in SECONDS_ZERO_ALLOWED.items():
            _check_seconds(name, getattr(self, name), zero_allowed)
        if self.trim_older_than_seconds is not None:
            _check_seconds("trim_older_than_seconds", self.trim_older_than_seconds, False,
                           unset="or None for no trimming")
        _check_run(self.run)
        cards = self.wallet
        if cards is not None and not (isinstance(cards, (list, tuple)) and cards
                                      and all(isinstance(card, str) for card in cards)):
            raise InvalidSettingsError("wallet", cards, "give a list of one or more card ids, such as ['amex-gold'], "
                                       "or None to judge users without a wallet against the whole catalog")

    @property
    def group_name(self) -> str:
        return self.group or self.keys.group(self.run)

    @property
    def results_stream(self) -> str:
        return self.keys.results(self.run)


def _check_int(name: str, value: object, low: int, high: int | None, unset: str = "") -> None:
    rule = f"give a whole number from {low} to {high}" if high is not None else f"give a whole number of {low} or more"
    if unset:
        rule += f", {unset}"
    if not isinstance(value, int) or isinstance(value, bool):  # bool is an int subclass, but no count
        raise InvalidSettingsError(name, value, rule)
    if value < low or (high is not None and value > high):
        raise InvalidSettingsError(name, value, rule)


def _check_seconds(name: str, value: object, zero_allowed: bool, unset: str = "") -> None:
    rule = "give 0 or more seconds" if zero_allowed else "give a number of seconds above 0"
    if unset:
        rule += f", {unset}"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0 or (value == 0 and not zero_allowed):
        raise InvalidSettingsError(name, value, rule)


def _check_run(run: object) -> None:
    if run == LIVE_RUN:
        return
    if not isinstance(run, str) or not RUN_NAME_PATTERN.fullmatch(run):
        raise InvalidSettingsError("run", run, f"give {LIVE_RUN!r} (the default) or a run name: {RUN_NAME_RULE}")
