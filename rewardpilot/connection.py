"""Connections to Redis: from ``REDIS_URL`` or, when unset, the embedded server.

``REDIS_URL`` accepts ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs,
with a password in the URL or in ``REDIS_PASSWORD``. When both are given, the
URL's wins: redis-py applies the URL's options over the keyword arguments.
URLs are redacted before they reach a log.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis

from rewardpilot.embedded import client_name, ensure_server, is_embedded_url

# NOTE: the socket timeout must stay longer than any XREADGROUP BLOCK, or a
# blocking read is cut off while its reply is on the way. Callers that block
# pass their block time and get this margin on top.
SOCKET_TIMEOUT_MARGIN_SECONDS = 5.0
DEFAULT_SOCKET_TIMEOUT_SECONDS = 10.0


URL_SCHEMES = ("redis", "rediss", "unix")


def resolve_url(url: str | None = None) -> str:
    """Return the Redis URL to use: the argument, ``REDIS_URL``, or the embedded server.

    Raises ValueError for a URL that is not redis://, rediss:// or unix://.
    """
    url = url or os.environ.get("REDIS_URL")
    if url:
        check_url(url)
        return url
    return ensure_server().url


def check_url(url: str) -> None:
    """Raise ValueError, with the URL redacted, unless ``url`` has a scheme redis-py can connect with."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme
        parts.port  # raises ValueError for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise ValueError(f"Redis URL {redact_safely(url)!r} is invalid ({exc}); "
                         "write it like redis://127.0.0.1:6379/0") from None
    if scheme not in URL_SCHEMES:
        raise ValueError(f"Redis URL {redact_safely(url)!r} is invalid: it must start with redis://, rediss:// "
                         "or unix://, like redis://127.0.0.1:6379/0")


def redact_safely(url: str) -> str:
    """Redact like ``redact``, and hide the whole URL when it cannot even be parsed."""
    try:
        return redact(url)
    except ValueError:
        return "<unparsable URL>"


def redact(url: str) -> str:
    """Return the URL with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    else:
        netloc = f":***@{netloc}"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _options(block_ms: int, url: str) -> dict:
    timeout = max(DEFAULT_SOCKET_TIMEOUT_SECONDS, block_ms / 1000 + SOCKET_TIMEOUT_MARGIN_SECONDS)
    options: dict = {
        "socket_timeout": timeout,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 30,
    }
    password = os.environ.get("REDIS_PASSWORD")
    if password:
        options["password"] = password
    if is_embedded_url(url):
        # The name (CLIENT SETNAME) lets `rewardpilot server stop` list the processes still
        # connected. Only the embedded server gets it: a server behind an ACL or a proxy may reject it.
        options["client_name"] = client_name()
    return options


def connect_async(url: str | None = None, *, block_ms: int = 0) -> aioredis.Redis:
    """Open an asyncio client whose socket timeout outlasts ``block_ms``."""
    resolved = resolve_url(url)
    return aioredis.Redis.from_url(resolved, **_options(block_ms, resolved))


def connect(url: str | None = None, *, block_ms: int = 0) -> redis.Redis:
    """Open a blocking client whose socket timeout outlasts ``block_ms``."""
    resolved = resolve_url(url)
    return redis.Redis.from_url(resolved, **_options(block_ms, resolved))
