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

from typing import TYPE_CHECKING, Any

from ..logsink import LateBoundSink

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
    from ..scripts.childenv import LiveEnv
    from .manager import DevcontainerManager

    mgr = DevcontainerManager(daemon.settings, daemon.store, LateBoundSink(lambda: daemon.log_sink),
                              manifest=lambda: daemon.manifest, child_env=LiveEnv(daemon.command_env.exported),
                              priority=daemon.child_priority)
    for method, path, handler in api.routes(mgr, lambda: daemon.manifest):
        daemon.local_api.route(method, path, handler)
    daemon.status_extras["devcontainers"] = mgr.status
    return [mgr]

