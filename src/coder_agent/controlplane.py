"""The state of the connection to coderd, as a table, for status and diagnosis.

Rules: states are DISCONNECTED (nothing tried yet or given up), CONNECTING, CONNECTED and
FAILING (last attempt failed; retrying). Every transition is allowed except into the
current state; each failure records the error text (already redacted) and its stage, and is
logged once per change of error (the :class:`~coder_agent.log.Collapse` rule).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .clock import Clock

__all__ = ["ConnState", "ControlPlane"]


class ConnState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILING = "failing"


@dataclass
class ControlPlane:
    clock: Clock
    state: ConnState = ConnState.DISCONNECTED
    since: dt.datetime | None = None
    last_error: str | None = None
    last_error_at: dt.datetime | None = None
    connected_at: dt.datetime | None = None
    attempts: int = 0
    transport: str = "rest"
    _listeners: list[Any] = field(default_factory=list)

    def on_change(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every change of :attr:`state`."""
        self._listeners.append(fn)

    def set(self, state: ConnState, error: str | None = None) -> None:
        now = self.clock.now()
        changed = state is not self.state
        if changed:
            self.state = state
            self.since = now
        if state is ConnState.CONNECTING:
            self.attempts += 1
        if state is ConnState.CONNECTED:
            self.connected_at = now
            self.attempts = 0
        if error is not None:
            self.last_error = error
            self.last_error_at = now
        if changed:
            for fn in list(self._listeners):
                fn()

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "since": self.since.isoformat() if self.since else None,
            "transport": self.transport,
            "connected_at": self.connected_at.isoformat() if self.connected_at else None,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
        }
