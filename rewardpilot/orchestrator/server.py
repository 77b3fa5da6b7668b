"""Run the orchestrator app on uvicorn."""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any

import uvicorn
from uvicorn.config import LOG_LEVELS

from rewardpilot.logs import get_logger
from rewardpilot.orchestrator.api_key import read_api_key
from rewardpilot.orchestrator.app import DEFAULT_MAX_BODY_BYTES, create_app


class ListenError(Exception):
    """The server cannot listen on the requested address and port."""


class StructlogHandler(logging.Handler):
    """Send stdlib ``logging`` records through rewardpilot's logging, as ``rewardpilot.logs.get_logger`` does.

    After ``rewardpilot.logs.configure()``, as in the CLI, each record
    becomes one structlog event. So it is one JSON line when stderr is not a
    terminal, with any traceback inside the event's ``exception`` field.
    Without it, each record goes to the stdlib logger
    ``rewardpilot.<record's logger name>``.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event, fields = _event_of(record)
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            log = get_logger(record.name)
            if record.levelno >= logging.CRITICAL:
                log.critical(event, **fields)
            elif record.levelno >= logging.ERROR:
                log.error(event, **fields)
            elif record.levelno >= logging.WARNING:
                log.warning(event, **fields)
            elif record.levelno >= logging.INFO:
                log.info(event, **fields)
            else:  # DEBUG and uvicorn's TRACE (5)
                log.debug(event, **fields)
        except Exception:  # noqa: BLE001 - a logging handler must not raise into the code that logged
            self.handleError(record)


def _event_of(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """Return a record's event text and fields; an access log line becomes ``request`` with its parts as fields."""
    fields: dict[str, Any] = {"logger": record.name}
    if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
        client, method, path, http_version, status = record.args
        fields.update(client=client, method=method, path=path, http_version=http_version, status=status)
        return "request", fields
    return record.getMessage().strip(), fields  # uvicorn ends "Exception in ASGI application" with a newline


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """Build a ``logging.config.dictConfig`` that sends uvicorn's loggers through ``StructlogHandler`` at ``level``.

    It replaces uvicorn's default, which prints plain text lines such as
    "INFO:     Started server process" and tracebacks over several lines.
    """
    numeric = LOG_LEVELS[check_log_level(level)]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"structlog": {"()": StructlogHandler}},
        "loggers": {
            "uvicorn": {"handlers": ["structlog"], "level": numeric, "propagate": False},
            "uvicorn.error": {"level": numeric},  # propagates to "uvicorn"
            "uvicorn.access": {"handlers": ["structlog"], "level": numeric, "propagate": False},
        },
    }


def check_log_level(level: str) -> str:
    """Return ``level`` in lower case, or raise ValueError when uvicorn has no such log level."""
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"--uvicorn-log-level {level!r} is invalid; use one of {', '.join(LOG_LEVELS)}")
    return level.lower()


def check_listen(host: str, port: int) -> None:
    """Bind and close a TCP socket on every address of ``host`` at ``port``, or raise ListenError naming them.

    The addresses and socket options are those asyncio's ``create_server``
    binds for uvicorn, so a port in use is reported before the app starts and
    logs that it started.
    """
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        candidates = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                        flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {address}: {exc.strerror}; check --host") from None
    for family, kind, protocol, _, sockaddr in candidates:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ListenError(f"cannot listen on {address}: the port is already in use; stop the "
                                      "process that holds it, or choose another port with --port") from None
                raise ListenError(f"cannot listen on {address}: {exc.strerror or exc}; "
                                  "check --host and --port") from None


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    api_key: str | None = None,
    redis_url: str | None = None,
    prefix: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    log_level: str = "info",
) -> None:
    """Serve the orchestrator until SIGINT or SIGTERM.

    ``api_key`` None reads ``ORCHESTRATOR_API_KEY`` through ``read_api_key``,
    and None or an empty key serves without auth. uvicorn logs through
    ``StructlogHandler``, one event per line like the rest of the
    orchestrator's logs. Its access log records the client address, method,
    path and status only, so the key never reaches a log.
    Raises ValueError for an unknown ``log_level`` or an invalid key
    (``InvalidApiKeyError``) and ListenError when the address cannot be
    bound, all before the app starts. ``uvicorn.run`` exits with 3
    (``uvicorn.config.STARTUP_FAILURE``) when the app fails to start.
    """
    level = check_log_level(log_level)
    if api_key is None:
        api_key = read_api_key("orchestrator")

    check_listen(host, port)
    app = create_app(
        api_key=api_key,
        redis_url=redis_url,
        prefix=prefix,
        max_body_bytes=max_body_bytes,
        host=host,
    )
    # NOTE: another process can still take the port between check_listen and
    # uvicorn's own bind; uvicorn then logs the error and exits with 3.
    uvicorn.run(app, host=host, port=port, log_level=level, log_config=uvicorn_log_config(level), proxy_headers=False)
