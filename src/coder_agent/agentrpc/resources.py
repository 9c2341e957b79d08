"""Resource monitoring (coder-agent-rpc.md §5.10): what coderd's out-of-memory and out-of-disk
notifications are computed from. Pure core + the samplers.

Rules (as the Go agent's ``resourcesmonitor``):

* The configuration comes once per connection from ``GetResourcesMonitoringConfiguration``:
  ``num_datapoints``, ``collection_interval_seconds``, memory (enabled or absent), volumes (path,
  enabled). Nothing enabled → nothing to do.
* Every interval one datapoint is sampled: memory ``total`` and ``used`` (total − available,
  bytes) when memory is enabled, and each enabled volume's ``total`` and ``used`` (total − free,
  bytes, ``statvfs`` of the path). A failed sample leaves that part out (the push goes on).
* Datapoints go into a FIFO of ``num_datapoints``; once it is full, every tick pushes ALL of it
  (a sliding window) with ``PushResourcesMonitoringUsage``. A failed push is logged, not fatal.
* Memory is the host's (psutil); unlike Go, a container's cgroup limit is not read.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf import timestamp_pb2

from ..rpc.proto import agent_pb2

__all__ = ["MonitorConfig", "ResourceMonitor", "host_memory", "volume_usage"]

Datapoint = agent_pb2.PushResourcesMonitoringUsageRequest.Datapoint


@dataclass(frozen=True)
class MonitorConfig:
    num_datapoints: int
    interval: float
    memory: bool
    volumes: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_response(cls, r: agent_pb2.GetResourcesMonitoringConfigurationResponse) -> MonitorConfig:
        return cls(num_datapoints=max(1, r.config.num_datapoints),
                   interval=float(r.config.collection_interval_seconds or 10),
                   memory=r.HasField("memory") and r.memory.enabled,
                   volumes=tuple(v.path for v in r.volumes if v.enabled and v.path))

    @property
    def enabled(self) -> bool:
        return self.memory or bool(self.volumes)


def host_memory() -> tuple[int, int]:
    """(total, used) bytes of the host's memory, used = total − available (Go's clistat)."""
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.total), int(vm.total - vm.available)


def volume_usage(path: str) -> tuple[int, int]:
    """(total, used) bytes of the filesystem holding ``path``, used = total − free (Go's clistat)."""
    import psutil

    du = psutil.disk_usage(path)
    return int(du.total), int(du.used)


class ResourceMonitor:
    """Pure: fed sample functions and times, builds datapoints and says when to push."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.queue: deque[Datapoint] = deque(maxlen=config.num_datapoints)
        self.errors: dict[str, str] = {}  # what failed at the last sample (memory / a volume path)

    def sample(self, now: dt.datetime, memory: Callable[[], tuple[int, int]],
               volume: Callable[[str], tuple[int, int]]) -> Datapoint:
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(now)
        dp = Datapoint(collected_at=ts)
        self.errors = {}
        if self.config.memory:
            try:
                total, used = memory()
                dp.memory.CopyFrom(Datapoint.MemoryUsage(total=total, used=used))
            except OSError as e:
                self.errors["memory"] = str(e)
        for path in self.config.volumes:
            try:
                total, used = volume(path)
                dp.volumes.append(Datapoint.VolumeUsage(volume=path, total=total, used=used))
            except OSError as e:
                self.errors[path] = str(e)
        self.queue.append(dp)
        return dp

    def due(self) -> agent_pb2.PushResourcesMonitoringUsageRequest | None:
        """The push to send now (every buffered datapoint), or None while the FIFO fills."""
        if len(self.queue) < self.config.num_datapoints:
            return None
        return agent_pb2.PushResourcesMonitoringUsageRequest(datapoints=list(self.queue))
