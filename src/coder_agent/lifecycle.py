"""The agent lifecycle as a table.

Rules (coder-agent-rpc.md §5.4 and §6.14):

* States are ordered; a transition only moves forward in that order, and only along the
  table below. CREATED is the initial state and is never reported to coderd.
* START_TIMEOUT may be followed by READY or START_ERROR (scripts that outlive their
  timeout can still finish); SHUTDOWN_TIMEOUT likewise by SHUTDOWN_ERROR or OFF.
* Any started state may go to SHUTTING_DOWN. OFF is final.
* An illegal transition raises :class:`LifecycleError` and leaves the state unchanged.
A re-initialised agent (prebuild claim) starts a fresh :class:`Lifecycle`.
"""

from __future__ import annotations

import enum

__all__ = ["Lifecycle", "LifecycleError", "State"]


class State(enum.IntEnum):
    # Values are agent.proto's Lifecycle.State numbers.
    CREATED = 1
    STARTING = 2
    START_TIMEOUT = 3
    START_ERROR = 4
    READY = 5
    SHUTTING_DOWN = 6
    SHUTDOWN_TIMEOUT = 7
    SHUTDOWN_ERROR = 8
    OFF = 9

    @property
    def api_name(self) -> str:
        """The codersdk JSON name (``start_timeout`` …)."""
        return self.name.lower()


_S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    _S.CREATED: frozenset({_S.STARTING, _S.SHUTTING_DOWN}),
    _S.STARTING: frozenset({_S.START_TIMEOUT, _S.START_ERROR, _S.READY, _S.SHUTTING_DOWN}),
    _S.START_TIMEOUT: frozenset({_S.START_ERROR, _S.READY, _S.SHUTTING_DOWN}),
    _S.START_ERROR: frozenset({_S.SHUTTING_DOWN}),
    _S.READY: frozenset({_S.SHUTTING_DOWN}),
    _S.SHUTTING_DOWN: frozenset({_S.SHUTDOWN_TIMEOUT, _S.SHUTDOWN_ERROR, _S.OFF}),
    _S.SHUTDOWN_TIMEOUT: frozenset({_S.SHUTDOWN_ERROR, _S.OFF}),
    _S.SHUTDOWN_ERROR: frozenset(),
    _S.OFF: frozenset(),
}


class LifecycleError(ValueError):
    pass


class Lifecycle:
    """Holds the current state and the transitions not yet acknowledged by coderd."""

    def __init__(self) -> None:
        self.state = State.CREATED
        self.pending: list[State] = []

    def advance(self, new: State) -> None:
        if new not in TRANSITIONS[self.state]:
            raise LifecycleError(f"lifecycle cannot go from {self.state.api_name} to {new.api_name}")
        self.state = new
        self.pending.append(new)

    def acknowledged(self, state: State) -> None:
        """coderd accepted ``state``: drop it and everything before it from ``pending``."""
        self.pending = [s for s in self.pending if s > state]

    @property
    def final(self) -> bool:
        return not TRANSITIONS[self.state]
