"""Backoff with full jitter, Retry-After parsing and transient/permanent classification."""

from __future__ import annotations

import socket
from datetime import datetime, timezone

import httpx
import pytest

from consumer.errors import PermanentError, TransientError
from consumer.retry import RetryPolicy, error_for_response, is_transient, parse_retry_after

NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=timezone.utc)
DRAWS = 2000


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [
        (0, 0.5),
        (1, 1.0),
        (3, 4.0),
        (5, 16.0),
        (6, 30.0),  # 0.5 * 64 = 32, capped at max_delay
        (10_000, 30.0),
    ],
)
def test_delay_within_jitter_bounds(attempt, ceiling):
    policy = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=30.0)
    draws = [policy.delay(attempt) for _ in range(DRAWS)]

    assert min(draws) >= 0.0
    assert max(draws) <= ceiling
    # Full jitter spreads over the whole range: with 2000 uniform draws the
    # chance of missing the top or bottom tenth is 0.9**2000.
    assert max(draws) > 0.9 * ceiling
    assert min(draws) < 0.1 * ceiling


def test_delay_rejects_negative_attempt():
    with pytest.raises(ValueError, match="-1"):
        RetryPolicy().delay(-1)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"base_delay": -1.0}, "base_delay"),
        ({"base_delay": 5.0, "max_delay": 1.0}, "max_delay"),
        ({"max_retry_after": -1.0}, "max_retry_after"),
    ],
)
def test_policy_rejects_invalid_settings(settings, named):
    with pytest.raises(ValueError, match=named):
        RetryPolicy(**settings)


def test_should_retry_counts_first_try():
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(1)
    assert policy.should_retry(2)
    assert not policy.should_retry(3)


def test_next_delay_obeys_retry_after():
    policy = RetryPolicy(base_delay=0.5, max_delay=2.0, max_retry_after=60.0)
    assert policy.next_delay(0, TransientError("busy", status=429, retry_after=7.0)) == 7.0
    assert policy.next_delay(0, TransientError("busy", status=429, retry_after=3600.0)) == 60.0


def test_next_delay_without_retry_after_uses_backoff():
    policy = RetryPolicy(base_delay=0.5, max_delay=2.0)
    delays = [policy.next_delay(2, TransientError("down", status=503)) for _ in range(200)]
    assert all(0.0 <= delay <= 2.0 for delay in delays)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 5 ", 5.0),
        ("100000", 300.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:30:00 GMT", 120.0),
        ("Wed, 21 Oct 2015 07:28:30 -0000", 30.0),
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),
        ("Thu, 22 Oct 2015 07:28:00 GMT", 300.0),
    ],
)
def test_parse_retry_after_values(header, seconds):
    assert parse_retry_after(header, NOW) == seconds


@pytest.mark.parametrize("header", [None, "", "   ", "soon", "-5", "1.5", "2015-10-21", "Wed, 99 Foo 2015"])
def test_parse_retry_after_garbage(header):
    assert parse_retry_after(header, NOW) is None


def test_parse_retry_after_custom_cap():
    assert parse_retry_after("90", NOW, max_seconds=10.0) == 10.0


@pytest.mark.parametrize(("status", "transient"), [
    (429, True), (502, True), (503, True), (504, True),
    (400, False), (401, False), (403, False), (404, False), (422, False), (500, False),
])
def test_is_transient_status(status, transient):
    assert is_transient(status) is transient


@pytest.mark.parametrize(("error", "transient"), [
    (httpx.ConnectError("refused"), True),
    (httpx.ConnectTimeout("slow connect"), True),
    (httpx.ReadTimeout("slow read"), True),
    (httpx.PoolTimeout("no free connection"), True),
    (httpx.ReadError("connection reset by peer"), True),
    (httpx.RemoteProtocolError("server disconnected without sending a response"), True),
    (ConnectionResetError(104, "reset"), True),
    (TimeoutError(), True),
    (TransientError("down", status=503), True),
    (httpx.LocalProtocolError("bad header"), False),
    (httpx.UnsupportedProtocol("ftp"), False),
    (PermanentError("bad request", status=400), False),
    (ValueError("bug"), False),
])
def test_is_transient_exception(error, transient):
    assert is_transient(error) is transient


@pytest.mark.parametrize(("status", "transient"), [(503, True), (404, False)])
def test_is_transient_http_status_error(status, transient):
    request = httpx.Request("POST", "http://127.0.0.1:9/recommend")
    response = httpx.Response(status, request=request)
    error = httpx.HTTPStatusError("failed", request=request, response=response)
    assert is_transient(error) is transient


def test_is_transient_rejects_bool():
    with pytest.raises(TypeError):
        is_transient(True)


def test_refused_connection_is_transient():
    # A port that was just free and is now closed refuses the connection.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(httpx.TransportError) as caught:
        httpx.post(f"http://127.0.0.1:{port}/recommend", timeout=2.0)
    assert is_transient(caught.value)


def test_error_for_response_transient_with_retry_after():
    request = httpx.Request("POST", "http://127.0.0.1:9/recommend?token=secret-value")
    response = httpx.Response(429, headers={"Retry-After": "3"}, request=request)

    error = error_for_response(response)
    assert isinstance(error, TransientError)
    assert error.status == 429
    assert error.retry_after == 3.0
    assert "POST /recommend" in str(error)
    assert "secret-value" not in str(error)


def test_error_for_response_permanent():
    response = httpx.Response(422, request=httpx.Request("POST", "http://127.0.0.1:9/recommend"))
    error = error_for_response(response)
    assert isinstance(error, PermanentError)
    assert error.status == 422


def test_error_for_response_success_is_none():
    response = httpx.Response(200, request=httpx.Request("POST", "http://127.0.0.1:9/recommend"))
    assert error_for_response(response) is None


def test_error_for_response_without_request():
    error = error_for_response(httpx.Response(503))
    assert isinstance(error, TransientError)
    assert error.retry_after is None
