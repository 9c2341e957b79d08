"""The backoff generator and the retry classifier: pure, no event loop."""

from __future__ import annotations

import pytest

from coder_agent.errors import ApiError, AuthError, ConfigError, FeatureUnavailable, TransportError
from coder_agent.retry import AUTH, CONNECT, Backoff, Decision, RetryPolicy, classify


@pytest.mark.parametrize("r", [0.0, 0.5, 0.999999])
def test_delays_stay_within_bounds(r: float) -> None:
    b = Backoff(CONNECT, rand=lambda: r)
    delays = [b.next_delay() for _ in range(40)]
    assert all(CONNECT.min_delay <= d <= CONNECT.cap for d in delays)
    assert delays[-1] >= CONNECT.cap * (1 - CONNECT.jitter)


def test_grows_exponentially_then_caps() -> None:
    b = Backoff(RetryPolicy(initial=1, factor=2, cap=8, jitter=0), rand=lambda: 0.0)
    assert [b.next_delay() for _ in range(6)] == [1, 2, 4, 8, 8, 8]


def test_connect_policy_matches_go_agent_bounds() -> None:
    # conformance: retries start at >= 100 ms and are capped at about 10 s
    assert CONNECT.min_delay >= 0.1
    assert CONNECT.cap <= 10
    assert AUTH.cap > CONNECT.cap


def test_reset_needs_sustained_success() -> None:
    b = Backoff(RetryPolicy(initial=1, factor=2, cap=100, jitter=0, reset_after=30), rand=lambda: 0.0)
    for _ in range(4):
        b.next_delay()
    b.success(now=0)
    b.success(now=10)  # a short success must not reset (open-then-die connections)
    assert b.next_delay() == 16
    b.success(now=100)
    b.success(now=131)
    assert b.next_delay() == 1


def test_retry_now_gives_one_zero_delay() -> None:
    b = Backoff(RetryPolicy(initial=1, jitter=0), rand=lambda: 0.0)
    b.next_delay()
    b.retry_now()
    assert b.next_delay() == 0
    assert b.next_delay() > 0


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(initial=5, cap=1)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=1.5)


@pytest.mark.parametrize(
    ("error", "decision"),
    [
        (AuthError(401, "nope"), Decision.REAUTHENTICATE),
        (AuthError(403, "non-latest build"), Decision.REAUTHENTICATE),
        (ApiError(500, "boom"), Decision.RETRY),
        (ApiError(502, "bad gateway"), Decision.RETRY),
        (ApiError(503, "unavailable"), Decision.RETRY),
        (ApiError(429, "slow down"), Decision.RETRY),
        (ApiError(400, "Validation failed."), Decision.FATAL),
        (ApiError(404, "not found"), Decision.FATAL),
        (ApiError(409, "conflict"), Decision.FATAL),
        (ApiError(413, "Logs limit exceeded"), Decision.FATAL),
        (TransportError("connect", "refused"), Decision.RETRY),
        (TransportError("dns", "no such host"), Decision.RETRY),
        (TimeoutError(), Decision.RETRY),
        (ConnectionResetError(), Decision.RETRY),
        (ConfigError("CODER_AGENT_URL", "must be set"), Decision.FATAL),
        (FeatureUnavailable("no UpdateAppStatus"), Decision.FATAL),
        (ValueError("a bug"), Decision.FATAL),
    ],
)
def test_classify(error: BaseException, decision: Decision) -> None:
    assert classify(error) is decision


def test_api_error_from_body_keeps_server_words() -> None:
    e = ApiError.from_body(409, {"message": "Multiple agents", "detail": "set CODER_AGENT_NAME",
                                 "validations": [{"field": "x", "detail": "y"}]})
    assert e.status == 409 and e.message == "Multiple agents" and e.detail == "set CODER_AGENT_NAME"
    assert "x: y" in str(e)
    assert isinstance(ApiError.from_body(401, None), AuthError)
    assert ApiError.from_body(502, "<html>").message == "HTTP 502"
