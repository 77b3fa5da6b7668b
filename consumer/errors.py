"""Errors raised while calling the recommender, for callers to catch by name.

A ``TransientError`` means "try again later": the entry stays pending in the
stream and is retried, and an outage never sends it to the dead-letter
stream. A ``PermanentError`` means the same request will fail every time, so
the entry is dead-lettered with the error as its reason. A
``ConfigurationError`` is a transient error that only a change of settings
ends, so it is also logged as an error.
"""

from __future__ import annotations


class RecommenderError(Exception):
    """Base class for failures of a recommender call."""


class TransientError(RecommenderError):
    """A failure that may succeed on retry: connection refused or reset, a
    timeout, or HTTP 429, 502, 503 or 504.

    ``status`` is the HTTP status, or None when no response arrived.
    ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ConfigurationError(TransientError):
    """A failure caused by this consumer's settings, not by the transactions.

    An example is an orchestrator URL whose path returns HTTP 404 or 405. It
    repeats until an operator fixes the settings, but the entries are not at
    fault, so it is handled as a transient failure: the batch is retried
    under the circuit breaker and given back, and nothing is dead-lettered.
    """


class PermanentError(RecommenderError):
    """A failure that repeats on every retry, such as HTTP 400, 401, 403 or 422."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class InvalidRateLimitError(ValueError):
    """A rate-limit setting (rate, burst, counting mode) is invalid."""
