"""One retry policy for the whole daemon: a backoff generator and an error classifier.

Both are pure. Rules:

* The first attempt is immediate; the n-th retry waits ``min(cap, initial * factor**(n-1))``
  scaled by a jitter factor drawn from ``[1 - jitter, 1]`` — so every delay lies within
  ``[initial * (1 - jitter), cap]``. Jitter never pushes a delay above the cap.
* ``success()`` resets the schedule only after a *sustained* success (``reset_after`` seconds
  since the first success of a run of successes), so a connection that opens and dies at once
  still backs off (USER-PAIN #5).
* ``retry_now()`` makes the next delay zero once (SIGHUP, ``status --retry-now``).
* ``classify(error)`` says what a loop does with a failure: RETRY (back off and try again),
  REAUTHENTICATE (get a fresh token, then retry with backoff), FATAL (give up on this request
  and report it; for configuration errors the daemon exits 78).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import (
    ApiError,
    AuthError,
    ConfigError,
    FeatureUnavailable,
    MetadataError,
    NotAuthenticated,
    ProtocolError,
    TransportError,
)

__all__ = ["Backoff", "Decision", "RetryPolicy", "classify"]


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of a backoff schedule, in seconds."""

    initial: float = 0.125
    factor: float = 2.0
    cap: float = 10.0
    jitter: float = 0.2
    reset_after: float = 30.0

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.cap):
            raise ValueError("need 0 < initial <= cap")
        if self.factor < 1 or not (0 <= self.jitter < 1):
            raise ValueError("need factor >= 1 and 0 <= jitter < 1")

    @property
    def min_delay(self) -> float:
        return self.initial * (1 - self.jitter)


# Control-plane connections (the Go agent uses 100 ms -> 10 s) and log shipping.
CONNECT = RetryPolicy()
# Log batches: the Go sender retries 1 s -> 5 s.
SHIP = RetryPolicy(initial=1.0, cap=5.0, factor=1.6)
# Auth errors (the server refusing us) back off further: the server answers 401 until the
# workspace build finishes, which can take minutes.
AUTH = RetryPolicy(initial=1.0, cap=30.0)


@dataclass
class Backoff:
    """A capped, jittered exponential schedule. Pure: time and randomness are passed in."""

    policy: RetryPolicy = CONNECT
    rand: Callable[[], float] = field(default=random.random)
    attempts: int = 0
    _success_since: float | None = None
    _now_pending: bool = False

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one failure."""
        self._success_since = None
        if self._now_pending:
            self._now_pending = False
            self.attempts = max(self.attempts, 1)
            return 0.0
        self.attempts += 1
        p = self.policy
        base = min(p.cap, p.initial * p.factor ** (self.attempts - 1))
        return base * (1 - p.jitter * self.rand())

    def success(self, now: float) -> None:
        """Record a success at monotonic time ``now``; resets once successes last ``reset_after``."""
        if self._success_since is None:
            self._success_since = now
        if now - self._success_since >= self.policy.reset_after:
            self.attempts = 0

    def reset(self) -> None:
        self.attempts = 0
        self._success_since = None

    def retry_now(self) -> None:
        self._now_pending = True


class Decision(enum.Enum):
    RETRY = "retry"
    REAUTHENTICATE = "reauthenticate"
    FATAL = "fatal"


_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def classify(error: BaseException) -> Decision:
    """What a loop should do after ``error``. Unknown exceptions are FATAL (they are bugs)."""
    if isinstance(error, AuthError):
        return Decision.REAUTHENTICATE
    if isinstance(error, ApiError):
        if error.status in _RETRY_STATUSES or error.status >= 500:
            return Decision.RETRY
        return Decision.FATAL
    if isinstance(error, NotAuthenticated):  # the token provider paces its own attempts
        return Decision.RETRY
    if isinstance(error, TransportError | MetadataError | ProtocolError | ConnectionError | TimeoutError):
        return Decision.RETRY
    if isinstance(error, ConfigError | FeatureUnavailable):
        return Decision.FATAL
    return Decision.FATAL
