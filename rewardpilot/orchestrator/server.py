"""Run the orchestrator app on uvicorn."""

from __future__ import annotations

import errno
import socket

import uvicorn
from uvicorn.config import LOG_LEVELS

from rewardpilot.orchestrator.api_key import read_api_key
from rewardpilot.orchestrator.app import DEFAULT_MAX_BODY_BYTES, create_app


class ListenError(Exception):
    """The server cannot listen on the requested address and port."""


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
    and None or an empty key serves without auth. uvicorn's access log
    records method, path and status only, so the key never reaches a log.
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
    uvicorn.run(app, host=host, port=port, log_level=level, proxy_headers=False)
