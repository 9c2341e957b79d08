"""Connection reports and live session counts: what the SSH and reconnecting-PTY servers tell
coderd through the agent session (ReportConnection, and the session counts of UpdateStats).

An interface module (ARCHITECTURE.md): the servers (``sshd``, ``rpty``) add events to one
:class:`ConnectionReports` queue the root makes; the agent session (``agentrpc``) drains it.

Rules:

* An event is CONNECT or DISCONNECT of one session, with its app name (``ssh``, ``vscode``,
  ``jetbrains``, ``reconnecting_pty``, ``unknown``: coderd's names; ``type`` is the deprecated
  ``Connection.Type`` for the same), the client's tunnel address without port ("localhost" is
  127.0.0.1, as Go), the time it happened and, on DISCONNECT, the status code and reason.
* The queue holds events in order while the RPC is down, at most :data:`QUEUE_CAP` (Go's 2048):
  past that new events are dropped and counted. An event leaves the queue only when coderd
  accepted it (:meth:`ConnectionReports.sent`).
* A coderd without ReportConnection (``FeatureUnavailable``): :meth:`ConnectionReports.disable`
  drops what is queued and everything later.
* :class:`SessionCounts` is how the stats reporter reads the servers' live counts, by app name.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["APP_TYPES", "QUEUE_CAP", "ConnectionEvent", "ConnectionReports", "SessionCounts", "SumCounts"]

QUEUE_CAP = 2048
# coderd's app name -> agent.proto Connection.Type (deprecated by app_name, still sent).
APP_TYPES = {"unknown": 0, "ssh": 1, "vscode": 2, "jetbrains": 3, "reconnecting_pty": 4}


@dataclass(frozen=True)
class ConnectionEvent:
    id: str  # a UUID string, the same for a session's CONNECT and DISCONNECT
    connect: bool  # False: DISCONNECT
    app: str  # a key of APP_TYPES
    ip: str
    at: dt.datetime
    status_code: int = 0
    reason: str | None = None

    @property
    def type(self) -> int:
        return APP_TYPES.get(self.app, 0)


def _host(ip: str) -> str:
    return "127.0.0.1" if ip == "localhost" else ip


class ConnectionReports:
    """The queue of connection events (see the module rules). ``now`` stamps events."""

    def __init__(self, now: Callable[[], dt.datetime] | None = None, cap: int = QUEUE_CAP) -> None:
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._cap = cap
        self._q: deque[ConnectionEvent] = deque()
        self._more = asyncio.Event()
        self.dropped = 0
        self.disabled = False

    def connect(self, id: str, app: str, ip: str) -> None:
        self._add(ConnectionEvent(id, True, app, _host(ip), self._now()))

    def disconnect(self, id: str, app: str, ip: str, status_code: int, reason: str) -> None:
        self._add(ConnectionEvent(id, False, app, _host(ip), self._now(), status_code, reason))

    def _add(self, ev: ConnectionEvent) -> None:
        if self.disabled:
            return
        if len(self._q) >= self._cap:
            self.dropped += 1
            return
        self._q.append(ev)
        self._more.set()

    def __len__(self) -> int:
        return len(self._q)

    async def wait(self) -> ConnectionEvent:
        """The oldest unsent event (waits for one); it stays queued until :meth:`sent`."""
        while not self._q:
            self._more.clear()
            await self._more.wait()
        return self._q[0]

    def sent(self, ev: ConnectionEvent) -> None:
        """coderd accepted ``ev`` (or refused it for good): it leaves the queue."""
        if self._q and self._q[0] is ev:
            self._q.popleft()

    def disable(self) -> None:
        """coderd has no ReportConnection: drop everything, now and later."""
        self.disabled = True
        self._q.clear()


class SessionCounts(Protocol):
    """Sessions open now, by app name (``ssh``, ``vscode``, ``jetbrains``, ``reconnecting_pty``)."""

    def session_counts(self) -> Mapping[str, int]: ...


class SumCounts:
    """Several servers' counts as one :class:`SessionCounts`."""

    def __init__(self, *parts: SessionCounts) -> None:
        self.parts = parts

    def session_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.parts:
            for k, v in p.session_counts().items():
                out[k] = out.get(k, 0) + v
        return out
