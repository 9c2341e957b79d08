"""The lifecycle reporter's core (pure): what to send next and what coderd acknowledged.

Rules (coder-agent-rpc.md §5.4, §6.14):

* States only move forward (:class:`~coder_agent.lifecycle.Lifecycle`'s table). Like the Go
  agent's ``setLifecycle``, a transition that is not allowed is dropped, not an error.
* Each accepted transition is queued with its ``changed_at``; the queue is sent one state at a
  time, in order, none coalesced. An acknowledged state leaves the queue; what is left when a
  connection drops is replayed in order on the next one.
* CREATED is never queued (it is only the local starting point).
* :meth:`LifecycleReporter.settled` is true when nothing is waiting: shutdown waits for it.
"""

from __future__ import annotations

import datetime as dt

from ..lifecycle import Lifecycle, LifecycleError, State

__all__ = ["LifecycleReporter"]


class LifecycleReporter:
    """Wraps a :class:`Lifecycle` and remembers when each queued state happened."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self._changed_at: dict[State, dt.datetime] = {}
        self.acknowledged: list[State] = []

    @property
    def state(self) -> State:
        return self.lifecycle.state

    def set(self, state: State, at: dt.datetime) -> bool:
        """Move to ``state`` at ``at``; False (and nothing queued) if that is not a forward move."""
        try:
            self.lifecycle.advance(state)
        except LifecycleError:
            return False
        self._changed_at[state] = at
        return True

    def next_unsent(self) -> tuple[State, dt.datetime] | None:
        """The oldest state coderd has not acknowledged yet, with its time."""
        if not self.lifecycle.pending:
            return None
        state = self.lifecycle.pending[0]
        return state, self._changed_at[state]

    def ack(self, state: State) -> None:
        """coderd accepted ``state``."""
        if state in self.lifecycle.pending:
            self.acknowledged.append(state)
        self.lifecycle.acknowledged(state)

    @property
    def settled(self) -> bool:
        return not self.lifecycle.pending
