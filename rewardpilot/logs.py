"""structlog set-up: JSON lines when stderr is not a terminal, colour when it is.

Logs always go to stderr, because stdout carries data (``subscribe`` prints
results there as JSON lines).
"""

from __future__ import annotations

import heapq
import logging
import os
import sys
import time
from collections.abc import Collection

import structlog

from rewardpilot.streams import entry_key

_configured = False

LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class InvalidLogLevelError(ValueError):
    """A log level name that is not one of ``LEVELS``."""


def parse_level(name: str) -> int:
    """Return the ``logging`` number of a level name in ``LEVELS``, in any case.

    Raises InvalidLogLevelError naming the value and the accepted levels.
    """
    level_name = name.strip().upper()
    if level_name not in LEVELS:
        raise InvalidLogLevelError(f"invalid log level {name!r}: expected one of {', '.join(LEVELS)} (any case)")
    return getattr(logging, level_name)


def configure(level: str | None = None, *, json: bool | None = None) -> None:
    """Configure structlog once per process; later calls only change the level.

    Without ``level`` the level comes from RP_LOG_LEVEL, else INFO. Raises
    InvalidLogLevelError when the level is not one of ``LEVELS``.
    """
    global _configured
    if level:
        numeric = parse_level(level)
    else:
        try:
            numeric = parse_level(os.environ.get("RP_LOG_LEVEL") or "INFO")
        except InvalidLogLevelError as exc:
            raise InvalidLogLevelError(f"RP_LOG_LEVEL: {exc}") from None
    if json is None:
        json = not sys.stderr.isatty()

    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str | None = None, **context) -> structlog.stdlib.BoundLogger:
    if not _configured:
        configure()
    logger = structlog.get_logger(name) if name else structlog.get_logger()
    return logger.bind(**context) if context else logger


LOGGED_ENTRY_IDS = 5  # entry ids a log line lists; ``entries`` counts them all


def entry_id_fields(entry_ids: Collection[str], limit: int = LOGGED_ENTRY_IDS) -> dict:
    """Build the ``entry_ids`` and ``entries`` fields of a log line about many stream entries.

    ``entry_ids`` lists the ``limit`` oldest ids in stream order, so
    ``XRANGE`` from the first one finds the entries, and ``entries`` counts
    all of them. Ids that are not stream ids keep their given order.
    """
    try:
        oldest = heapq.nsmallest(limit, entry_ids, key=entry_key)
    except ValueError:
        oldest = list(entry_ids)[:limit]
    return {"entry_ids": oldest, "entries": len(entry_ids)}


class RepeatFilter:
    """Let a repeated message through once per interval and count the rest.

    ``allow(key)`` returns ``(True, suppressed_count)`` when the caller should
    log now, reporting how many repeats were held back since the last time.
    """

    def __init__(self, interval_seconds: float = 10.0):
        self.interval = interval_seconds
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> tuple[bool, int]:
        now = time.monotonic()
        last = self._last.get(key)
        if last is None or now - last >= self.interval:
            self._last[key] = now
            return True, self._suppressed.pop(key, 0)
        self._suppressed[key] = self._suppressed.get(key, 0) + 1
        return False, 0
