"""``RepeatedFailureLog``: the log lines of a periodic task that keeps failing, such as through a Redis outage."""

from __future__ import annotations

import time
from typing import Any

from rewardpilot.logs import RepeatFilter

# Seconds between two lines about the same repeated failure. A task that runs
# every 5 s through an hour-long outage then writes 60 lines, not 720.
FAILURE_LOG_INTERVAL_SECONDS = 60.0


class RepeatedFailureLog:
    """Log the first failure of a periodic task at once, then one line per interval, then one line when it recovers.

    Each failure line carries ``failures`` (in a row so far) and
    ``suppressed_repeats`` (the failures not logged since the last line).
    The recovery line carries ``failures`` and ``failing_seconds``. A
    success without failures before it logs nothing.
    """

    def __init__(self, log: Any, interval_seconds: float = FAILURE_LOG_INTERVAL_SECONDS):
        self.log = log
        self.interval_seconds = interval_seconds
        self.failures = 0
        self._repeats = RepeatFilter(interval_seconds)
        self._first_failure_at: float | None = None

    def failed(self, event: str, **fields: Any) -> None:
        """Count a failure and log it at WARNING unless a line about ``event`` went out within the interval."""
        self.failures += 1
        if self._first_failure_at is None:
            self._first_failure_at = time.monotonic()
        allowed, suppressed = self._repeats.allow(event)
        if allowed:
            self.log.warning(event, failures=self.failures, suppressed_repeats=suppressed, **fields)

    def succeeded(self, event: str, **fields: Any) -> None:
        """Log ``event`` at INFO if failures came before this success, and start counting afresh."""
        if not self.failures:
            return
        failing_seconds = time.monotonic() - (self._first_failure_at or time.monotonic())
        self.log.info(event, failures=self.failures, failing_seconds=round(failing_seconds, 1), **fields)
        self.failures = 0
        self._first_failure_at = None
        # The next outage's first failure is logged at once.
        self._repeats = RepeatFilter(self.interval_seconds)
