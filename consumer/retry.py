"""Retry timing: exponential backoff with full jitter, ``Retry-After``, and
the split between transient and permanent failures.

Full jitter draws each delay uniformly from ``[0, min(max_delay,
base_delay * 2**attempt)]``, which spreads retries from many consumers
instead of letting them arrive in waves.

Waiting for a rate-limiter token is not a retry and does not count here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import httpx

from consumer.errors import PermanentError, TransientError

# HTTP statuses worth retrying: 429 Too Many Requests, and the 502, 503 and
# 504 responses a proxy returns while the service behind it is down or slow.
# Every other 4xx and 5xx is permanent here, including 500, which usually means
# that this one request broke the service. The HTTP recommender handles 404,
# 405 (a wrong URL path) and 413 (a batch too large) before this split.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})

# Transport failures where the request may not have been processed: refused
# or reset connections, every kind of timeout, and a server that closed the
# connection without a response. httpx.LocalProtocolError and
# httpx.UnsupportedProtocol are bugs on our side, so they are not listed.
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
    ConnectionError,
    TimeoutError,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to try a call and how long to wait between tries.

    ``max_attempts`` counts the first try, so 5 means 1 call and up to 4
    retries. Delays are in seconds. ``max_retry_after`` caps a server's
    ``Retry-After`` so that a wrong header cannot stall a consumer for hours.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0:
            raise ValueError(f"base_delay must not be negative, got {self.base_delay}")
        if self.max_delay < self.base_delay:
            raise ValueError(
                f"max_delay ({self.max_delay}) must not be less than base_delay ({self.base_delay})"
            )
        if self.max_retry_after < 0:
            raise ValueError(f"max_retry_after must not be negative, got {self.max_retry_after}")

    def should_retry(self, attempt: int) -> bool:
        """Return whether another try is allowed after ``attempt`` tries failed (1-based)."""
        return attempt < self.max_attempts

    def delay(self, attempt: int) -> float:
        """Return a full-jitter backoff in seconds before retry number ``attempt`` (0-based)."""
        if attempt < 0:
            raise ValueError(f"attempt must not be negative, got {attempt}")

        # Cap the exponent so 2**attempt cannot overflow a float for huge attempts.
        ceiling = min(self.max_delay, self.base_delay * 2 ** min(attempt, 64))
        return random.uniform(0, ceiling)

    def next_delay(self, attempt: int, error: TransientError | None = None) -> float:
        """Return the wait before retry number ``attempt``, obeying the error's ``Retry-After``.

        A server's ``Retry-After`` replaces the jittered backoff, capped at
        ``max_retry_after``.
        """
        if error is not None and error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.max_retry_after)
        return self.delay(attempt)


def parse_retry_after(value: str | None, now: datetime | None = None, *, max_seconds: float = 300.0) -> float | None:
    """Parse a ``Retry-After`` header into seconds from ``now``, capped at ``max_seconds``.

    The header is either delay-seconds (digits only) or an HTTP-date
    (RFC 9110 10.2.3). A date in the past gives 0. Returns None for a missing
    or unparseable header, so the caller falls back to its own backoff.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None

    if text.isascii() and text.isdigit():
        return min(float(text), max_seconds)

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # parsedate_to_datetime returns a naive datetime for a "-0000" zone;
        # HTTP-dates are always GMT.
        when = when.replace(tzinfo=timezone.utc)

    now = now or datetime.now(timezone.utc)
    seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), max_seconds)


def is_transient(failure: BaseException | int) -> bool:
    """Return whether an exception or HTTP status is worth retrying.

    Accepts an HTTP status code, a ``TransientError`` or ``PermanentError``,
    an ``httpx.HTTPStatusError`` (judged by its status), or a transport
    exception. Anything else is permanent.
    """
    if isinstance(failure, bool):
        raise TypeError("is_transient expects an exception or an HTTP status code, not a bool")
    if isinstance(failure, int):
        return failure in TRANSIENT_STATUSES
    if isinstance(failure, TransientError):
        return True
    if isinstance(failure, PermanentError):
        return False
    if isinstance(failure, httpx.HTTPStatusError):
        return failure.response.status_code in TRANSIENT_STATUSES
    return isinstance(failure, TRANSIENT_EXCEPTIONS)


def error_for_response(response: httpx.Response, *, max_retry_after: float = 300.0) -> TransientError | PermanentError | None:
    """Return the error for a non-success response, or None for a 2xx or 3xx.

    A transient error carries the parsed ``Retry-After`` header, if any. The
    message names the method and path only, because a URL's host part or
    query string may carry credentials.
    """
    status = response.status_code
    if status < 400:
        return None

    try:
        target = f"{response.request.method} {response.request.url.path}"
    except RuntimeError:  # a Response built without a request
        target = "request"
    message = f"{target} failed with HTTP {status}"
    if status in TRANSIENT_STATUSES:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), max_seconds=max_retry_after)
        return TransientError(message, status=status, retry_after=retry_after)
    return PermanentError(message, status=status)
