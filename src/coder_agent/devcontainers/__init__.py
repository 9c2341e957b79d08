"""Devcontainers: containers and dev containers from the Docker engine, on the local API.

Plug-in point: :func:`setup` (listed in ``daemon._capabilities()``). Modules:

* :mod:`.status`    the status state machine (pure table)
* :mod:`.model`     inspect data → codersdk JSON; merging sources and containers (pure)
* :mod:`.cliparse`  the Dev Containers CLI's output (pure)
* :mod:`.discovery` devcontainer.json files in git projects
* :mod:`.engine`    the docker SDK, blocking (run from threads)
* :mod:`.manager`   the service: events, scans, recreate and delete jobs
* :mod:`.api`       the ``/api/v0/containers`` routes
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ..logsink import LogSource

if TYPE_CHECKING:
    from ..daemon import Daemon

__all__ = ["setup"]


def setup(daemon: Daemon) -> list[Any]:
    """Register the container routes; return the devcontainers service (none when disabled)."""
    from . import api

    if not daemon.settings.devcontainers_enable:
        for method, path, handler in api.disabled_routes():
            daemon.local_api.route(method, path, handler)
        daemon.status_extras["devcontainers"] = lambda: {"state": "disabled"}
        return []
    from .manager import DevcontainerManager

    mgr = DevcontainerManager(daemon.settings, daemon.store, _LateSink(daemon),
                              manifest=lambda: daemon.manifest, child_env=daemon.child_env)
    for method, path, handler in api.routes(mgr, lambda: daemon.manifest):
        daemon.local_api.route(method, path, handler)
    daemon.status_extras["devcontainers"] = mgr.status
    return [mgr]


class _LateSink:
    """The daemon's log sink as it is at each call (the log pipeline may replace it after setup)."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def source(self, display_name: str, icon: str = "", id: str | None = None) -> LogSource:
        return self._daemon.log_sink.source(display_name, icon, id)

    def write(self, source: LogSource, output: str, level: str = "info",
              created_at: dt.datetime | None = None) -> None:
        self._daemon.log_sink.write(source, output, level, created_at)

    async def flush(self, source: LogSource | None = None, timeout: float | None = None) -> None:
        await self._daemon.log_sink.flush(source, timeout)
