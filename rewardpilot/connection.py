"""Connections to Redis: from ``REDIS_URL`` or, when unset, the embedded server.

``REDIS_URL`` accepts ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs,
with a password in the URL or in ``REDIS_PASSWORD``. When both are given, the
URL's wins: redis-py applies the URL's options over the keyword arguments.
URLs are redacted before they reach a log.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, unquote_plus, urlsplit

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
    """Raise ValueError, with the URL redacted, unless ``url`` is one redis-py can connect with.

    Checks the scheme, the ``//`` after it, the port, the database and the
    query options (redis-py's own parsing, which otherwise fails later with a
    traceback that names no URL).
    """
    shown = redact_safely(url)
    if url != url.strip():
        raise ValueError(f"Redis URL {shown!r} is invalid: it starts or ends with white space; remove it")
    try:
        parts = urlsplit(url)
        scheme = parts.scheme
        parts.port  # raises ValueError for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise ValueError(f"Redis URL {shown!r} is invalid ({exc}); write it like redis://127.0.0.1:6379/0") from None
    if scheme not in URL_SCHEMES:
        raise ValueError(f"Redis URL {shown!r} is invalid: it must start with redis://, rediss:// "
                         "or unix://, like redis://127.0.0.1:6379/0")
    if not url.startswith(f"{scheme}://"):
        raise ValueError(f"Redis URL {shown!r} is invalid: {scheme}: must be followed by //, "
                         f"like {scheme}://127.0.0.1:6379/0")

    # redis-py ignores a path database that is not a number and connects to database 0 (parse_url in
    # redis-py 8.2), so a typo would send every command to another database.
    databases = [value for name, value in parse_qsl(parts.query) if name == "db"]
    if scheme != "unix" and parts.path.replace("/", ""):
        databases.append(parts.path.replace("/", ""))
    for database in databases:
        if not (database.isascii() and database.isdigit()):
            raise ValueError(f"Redis URL {shown!r} is invalid: database {database!r} is not a "
                             "number; write it like redis://127.0.0.1:6379/0")

    _check_options(url, shown)


def _check_options(url: str, shown: str) -> None:
    """Build (without connecting) the connection redis-py would open, so a bad query option fails here."""
    try:
        pool = redis.ConnectionPool.from_url(url)
        pool.make_connection()
    except (ValueError, TypeError, redis.RedisError) as exc:
        # redis-py names an option it does not take in a TypeError about a keyword argument.
        reason = str(exc).replace("AbstractConnection.__init__() got an unexpected keyword argument",
                                  "unknown option")
        fix = "check the options after the '?', as listed in redis-py's from_url documentation"
        if "unknown option 'ssl_" in reason:
            fix = "ssl_ options take effect only with TLS, so start the URL with rediss://, or " + fix
        raise ValueError(f"Redis URL {shown!r} is invalid: {reason.rstrip('.')}; {fix}") from None
    pool.disconnect()


def redact_safely(url: str) -> str:
    """Redact like ``redact``, and hide the whole URL when it cannot even be parsed."""
    try:
        return redact(url)
    except ValueError:
        return "<unparsable URL>"


# Query parameters whose value is masked by ``redact``: a name containing any of these, in any case.
# redis-py takes ``password`` (and ``ssl_password``) from a URL's query as well as from its user info.
SECRET_QUERY_NAMES = ("password", "passwd", "secret", "token", "apikey", "api_key", "api-key")


def redact(url: str) -> str:
    """Return the URL with the password of its user info and of secret query parameters replaced by ``***``.

    The user name stays readable, as do the host, port, path and the other
    query parameters (see ``SECRET_QUERY_NAMES``). A URL without ``//``
    after its scheme, such as ``user:secret@host:6379``, has no user info
    that urlsplit can find, so everything between the scheme and the last
    ``@`` is masked.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    elif not netloc:
        return _redact_without_authority(url)
    query = "&".join(_redact_parameter(parameter) for parameter in parts.query.split("&")) if parts.query else ""
    if netloc == parts.netloc and query == parts.query:
        return url
    # Built by hand, because urlunsplit drops the "//" of a URL without a host, such as unix:///tmp/redis.sock.
    redacted = f"{parts.scheme}://{netloc}{parts.path}"
    if query:
        redacted = f"{redacted}?{query}"
    if parts.fragment:
        redacted = f"{redacted}#{parts.fragment}"
    return redacted


def _redact_without_authority(url: str) -> str:
    """Mask what comes before the last ``@`` of a URL that urlsplit finds no host in, and its secret parameters."""
    address, question, query = url.partition("?")
    before, at, after = address.rpartition("@")
    if at:
        scheme, colon, rest = before.partition(":")
        kept = f"{scheme}:{rest[:len(rest) - len(rest.lstrip('/'))]}" if colon and scheme.isalpha() else ""
        address = f"{kept}***@{after}"
    if question:
        query = "&".join(_redact_parameter(parameter) for parameter in query.split("&"))
    return f"{address}{question}{query}"


def _redact_parameter(parameter: str) -> str:
    name, equals, _value = parameter.partition("=")
    if equals and any(secret in unquote_plus(name).lower() for secret in SECRET_QUERY_NAMES):
        return f"{name}=***"
    return parameter


def password_given(url: str) -> bool:
    """Return whether a password reaches the server for ``url``: in its user info, its query or ``REDIS_PASSWORD``."""
    parts = urlsplit(url)
    if parts.password or os.environ.get("REDIS_PASSWORD"):
        return True
    return any(name == "password" and value for name, value in parse_qsl(parts.query))


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


def connect(url: str | None = None, *, block_ms: int = 0, socket_timeout: float | None = None) -> redis.Redis:
    """Open a blocking client whose socket timeout outlasts ``block_ms``, or is ``socket_timeout`` seconds when given."""
    resolved = resolve_url(url)
    options = _options(block_ms, resolved)
    if socket_timeout is not None:
        options["socket_timeout"] = socket_timeout
    return redis.Redis.from_url(resolved, **options)
