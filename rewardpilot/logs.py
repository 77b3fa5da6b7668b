"""Logging for the CLI (structlog) and for programs that import rewardpilot (stdlib ``logging``).

The CLI calls ``configure()``: from then on, log lines go to stderr as JSON
when stderr is not a terminal and as coloured console lines when it is.
They never go to stdout, because stdout carries data (``subscribe`` prints
results there as JSON lines).

Imported as a library, rewardpilot changes neither structlog's global
configuration nor the ``logging`` set-up. Until ``configure()`` is called,
every line goes to the stdlib logger ``rewardpilot.<name>`` (such as
``rewardpilot.consumer`` or ``rewardpilot.results``), so the host's
handlers, formatters and levels decide what is shown. Its message is the
event followed by its fields as ``key=value``. With no handler configured
anywhere, Python's last-resort handler prints WARNING and above to stderr.
"""

from __future__ import annotations

import heapq
import logging
import os
import sys
import time
from collections.abc import Collection
from typing import Any

import structlog
import structlog.testing

from rewardpilot.streams import entry_key

_configured = False

LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ROOT_LOGGER = "rewardpilot"


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
    """Send rewardpilot's logs through structlog's global configuration, printed on stderr.

    This replaces structlog's global configuration, so only programs that
    own their logging call it: the CLI does, and a library caller may. Each
    call replaces the previous one. Without ``level`` the level comes from
    RP_LOG_LEVEL, else INFO. ``json`` None picks JSON lines when stderr is
    not a terminal. Raises InvalidLogLevelError when the level is not one of
    ``LEVELS``.
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


def stdlib_logger_name(name: str | None) -> str:
    """Return the ``logging`` name for a rewardpilot logger: ``rewardpilot`` or a child of it."""
    if not name or name == ROOT_LOGGER:
        return ROOT_LOGGER
    if name.startswith(ROOT_LOGGER + "."):
        return name
    return f"{ROOT_LOGGER}.{name}"


def render_for_logging(logger: logging.Logger, method_name: str, event_dict: dict) -> tuple[tuple, dict]:
    """Convert an event into ``logging.Logger`` call arguments: ``event key=value ...``, exc_info and stack_info.

    The exception is left to the host's formatter, like any other record's.
    """
    exc_info = event_dict.pop("exc_info", None)
    stack_info = bool(event_dict.pop("stack_info", False))
    event = str(event_dict.pop("event", ""))
    fields = " ".join(f"{key}={value!r}" for key, value in event_dict.items())
    message = f"{event} {fields}" if fields else event
    return (message,), {"exc_info": exc_info, "stack_info": stack_info}


LIBRARY_PROCESSORS = [
    structlog.stdlib.filter_by_level,
    structlog.contextvars.merge_contextvars,
    render_for_logging,
]


def _capturing_logs() -> bool:
    """Return True while ``structlog.testing.capture_logs()`` has replaced structlog's global processors."""
    return any(isinstance(processor, structlog.testing.LogCapture)
               for processor in structlog.get_config()["processors"])


class LazyLogger:
    """A logger that picks its output at each call, so one made at import time follows a later ``configure()``.

    After ``configure()``, and while ``structlog.testing.capture_logs()`` is
    active, events go through structlog's global configuration. Otherwise
    they go to the stdlib logger ``stdlib_logger_name(name)``.
    """

    __slots__ = ("name", "context", "_library_logger")

    def __init__(self, name: str | None, context: dict[str, Any]):
        self.name = name
        self.context = context
        self._library_logger: structlog.stdlib.BoundLogger | None = None

    def bind(self, **context: Any) -> LazyLogger:
        """Return a logger that adds ``context`` to every line."""
        return LazyLogger(self.name, {**self.context, **context})

    def debug(self, event: str, **fields: Any) -> None:
        self._target().debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._target().info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._target().warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._target().error(event, **fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._target().critical(event, **fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Log at ERROR with the exception being handled."""
        self._target().exception(event, **fields)

    def _target(self) -> Any:
        if _configured or _capturing_logs():
            # Resolved at every call, as structlog's own lazy loggers are, so a later configure() applies.
            logger = structlog.get_logger(self.name) if self.name else structlog.get_logger()
            return logger.bind(**self.context)
        if self._library_logger is None:
            self._library_logger = structlog.wrap_logger(
                logging.getLogger(stdlib_logger_name(self.name)),
                processors=LIBRARY_PROCESSORS,
                wrapper_class=structlog.stdlib.BoundLogger,
                context_class=dict,
                **self.context,
            ).bind()
        return self._library_logger


def get_logger(name: str | None = None, **context: Any) -> LazyLogger:
    """Return a logger for ``name`` with ``context`` on every line; see ``LazyLogger`` for where lines go.

    It changes no logging configuration, so modules call it at import time.
    """
    return LazyLogger(name, context)


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
