"""The devcontainer status machine: one table, no I/O.

Statuses are codersdk.WorkspaceAgentDevcontainerStatus: ``running``, ``stopped``, ``starting``,
``stopping``, ``deleting``, ``error``, plus the pseudo-status ``removed`` (the entry leaves the
list after a successful delete).

Rules:

* Transitions are data (:data:`TABLE`): state → event → next state. An event missing from a
  state's row is *refused* (:class:`Refused`); the API turns a refused recreate/delete into 409.
* ``starting``, ``stopping`` and ``deleting`` are transitional: only the job that owns them
  moves them on (``*_done`` / ``*_failed``); scan observations never do, and a second
  recreate or delete is refused.
* No going back: a delete never returns to ``starting``; ``deleting`` never returns to
  ``stopping``; ``removed`` is terminal.
* ``error`` is sticky: scans do not clear it unless they see a container created after the
  failure (``observed_*_new``), which means someone fixed it by other means (e.g. ran
  ``devcontainer up`` by hand). A new recreate or delete also leaves it.
"""

from __future__ import annotations

import enum

__all__ = ["TABLE", "TRANSITIONAL", "Event", "Refused", "Status", "next_status", "observation"]


class Status(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    STARTING = "starting"
    STOPPING = "stopping"
    DELETING = "deleting"
    ERROR = "error"
    REMOVED = "removed"


class Event(enum.StrEnum):
    OBSERVED_RUNNING = "observed_running"  # a scan saw the devcontainer's container running
    OBSERVED_STOPPED = "observed_stopped"  # ... saw it stopped, or saw no container
    OBSERVED_RUNNING_NEW = "observed_running_new"  # ... running, created after the last failure
    OBSERVED_STOPPED_NEW = "observed_stopped_new"
    RECREATE = "recreate"  # the API asked to recreate
    RECREATE_DONE = "recreate_done"
    RECREATE_FAILED = "recreate_failed"
    DELETE = "delete"  # the API asked to delete
    STOP_DONE = "stop_done"
    REMOVE_DONE = "remove_done"
    DELETE_FAILED = "delete_failed"


S, E = Status, Event
_SETTLED = {
    E.OBSERVED_RUNNING: S.RUNNING,
    E.OBSERVED_STOPPED: S.STOPPED,
    E.OBSERVED_RUNNING_NEW: S.RUNNING,
    E.OBSERVED_STOPPED_NEW: S.STOPPED,
    E.RECREATE: S.STARTING,
    E.DELETE: S.STOPPING,
}

TABLE: dict[Status, dict[Event, Status]] = {
    S.RUNNING: dict(_SETTLED),
    S.STOPPED: dict(_SETTLED),
    S.ERROR: {
        E.OBSERVED_RUNNING: S.ERROR,
        E.OBSERVED_STOPPED: S.ERROR,
        E.OBSERVED_RUNNING_NEW: S.RUNNING,
        E.OBSERVED_STOPPED_NEW: S.STOPPED,
        E.RECREATE: S.STARTING,
        E.DELETE: S.STOPPING,
    },
    S.STARTING: {
        E.OBSERVED_RUNNING: S.STARTING,
        E.OBSERVED_STOPPED: S.STARTING,
        E.OBSERVED_RUNNING_NEW: S.STARTING,
        E.OBSERVED_STOPPED_NEW: S.STARTING,
        E.RECREATE_DONE: S.RUNNING,
        E.RECREATE_FAILED: S.ERROR,
    },
    S.STOPPING: {
        **{o: S.STOPPING for o in (E.OBSERVED_RUNNING, E.OBSERVED_STOPPED,
                                   E.OBSERVED_RUNNING_NEW, E.OBSERVED_STOPPED_NEW)},
        E.STOP_DONE: S.DELETING,
        E.DELETE_FAILED: S.ERROR,
    },
    S.DELETING: {
        **{o: S.DELETING for o in (E.OBSERVED_RUNNING, E.OBSERVED_STOPPED,
                                   E.OBSERVED_RUNNING_NEW, E.OBSERVED_STOPPED_NEW)},
        E.REMOVE_DONE: S.REMOVED,
        E.DELETE_FAILED: S.ERROR,
    },
    S.REMOVED: {},
}

TRANSITIONAL = frozenset({S.STARTING, S.STOPPING, S.DELETING})


class Refused(Exception):
    """The event is not allowed in this state (the API answers 409 for recreate/delete)."""

    def __init__(self, status: Status, event: Event) -> None:
        super().__init__(f"{event.value} is not allowed while {status.value}")
        self.status = status
        self.event = event


def next_status(status: Status, event: Event) -> Status:
    """The state after ``event``; raises :class:`Refused` when the table has no such move."""
    try:
        return TABLE[status][event]
    except KeyError:
        raise Refused(status, event) from None


def observation(running: bool, newer_than_failure: bool) -> Event:
    """The event a scan reports for a devcontainer (no container counts as stopped)."""
    if running:
        return E.OBSERVED_RUNNING_NEW if newer_than_failure else E.OBSERVED_RUNNING
    return E.OBSERVED_STOPPED_NEW if newer_than_failure else E.OBSERVED_STOPPED
