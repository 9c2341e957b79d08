"""App health: the per-app state machine (pure) and the HTTP probe.

Rules (coder-agent-rpc.md §5.8):

* Apps whose manifest health is ``disabled`` take no part. Of the others, only apps with a
  healthcheck URL, interval > 0 and threshold > 0 are probed; the rest keep their health.
* A probe is healthy when any response with status < 500 arrives within interval − 1 ms.
* Success → ``healthy`` and the failure counter resets. Failure → the counter grows while it
  is below ``threshold``; a failure with the counter already at ``threshold`` → ``unhealthy``
  (so, as in the Go agent, ``unhealthy`` after threshold + 1 consecutive failures).
* When anything changed since the last report, the next report carries the FULL map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ..rpc.proto import agent_pb2
from .manifest import uuid_bytes

__all__ = ["AppHealthTracker", "Probe", "probe", "report_request"]

_WIRE = {"disabled": agent_pb2.DISABLED, "initializing": agent_pb2.INITIALIZING,
         "healthy": agent_pb2.HEALTHY, "unhealthy": agent_pb2.UNHEALTHY}


@dataclass(frozen=True)
class Probe:
    app_id: str
    url: str
    interval: float
    threshold: int


class AppHealthTracker:
    def __init__(self, apps: Sequence[Mapping[str, Any]]) -> None:
        self.health: dict[str, str] = {}
        self.probes: list[Probe] = []
        self._failures: dict[str, int] = {}
        self._changed = False
        for a in apps:
            health = str(a.get("health", "disabled"))
            if health in ("disabled", "unspecified") or not a.get("id"):
                continue
            self.health[str(a["id"])] = health
            hc = a.get("healthcheck") or {}
            if hc.get("url") and float(hc.get("interval") or 0) > 0 and int(hc.get("threshold") or 0) > 0:
                self.probes.append(Probe(str(a["id"]), str(hc["url"]), float(hc["interval"]), int(hc["threshold"])))

    def result(self, probe: Probe, ok: bool) -> None:
        old = self.health[probe.app_id]
        if ok:
            self._failures[probe.app_id] = 0
            new = "healthy"
        else:
            n = self._failures.get(probe.app_id, 0)
            if n < probe.threshold:
                self._failures[probe.app_id] = n + 1
                new = old
            else:
                new = "unhealthy"
        if new != old:
            self.health[probe.app_id] = new
            self._changed = True

    @property
    def pending(self) -> bool:
        """A change not reported yet."""
        return self._changed

    def take_report(self) -> dict[str, str] | None:
        """The full map if anything changed since the last call, else None."""
        if not self._changed:
            return None
        self._changed = False
        return dict(self.health)

    def put_back(self) -> None:
        self._changed = True


def report_request(health: Mapping[str, str]) -> agent_pb2.BatchUpdateAppHealthRequest:
    return agent_pb2.BatchUpdateAppHealthRequest(updates=[
        agent_pb2.BatchUpdateAppHealthRequest.HealthUpdate(id=uuid_bytes(k), health=_WIRE[v])
        for k, v in health.items() if v in _WIRE])


async def probe(client: httpx.AsyncClient, p: Probe) -> bool:
    try:
        resp = await client.get(p.url, timeout=max(p.interval - 0.001, 0.001))
    except httpx.HTTPError:
        return False
    return resp.status_code < 500
