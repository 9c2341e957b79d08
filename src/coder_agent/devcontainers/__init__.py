"""Devcontainers: containers and dev containers from the Docker engine, on the local API.

Plug-in point: :func:`setup` (called by the composition root, ``Daemon.compose``). Modules:

* :mod:`.status`    the status state machine (pure table)
* :mod:`.model`     inspect data → codersdk JSON; merging sources and containers (pure)
* :mod:`.cliparse`  the Dev Containers CLI's output (pure)
* :mod:`.devconfig` what we read from a devcontainer.json itself (pure; ``autoStart``)
* :mod:`.discovery` devcontainer.json files in git projects
* :mod:`.engine`    the docker SDK, blocking (run from threads)
* :mod:`.watch`     inotify on the project directories (discovery, config changes)
* :mod:`.manager`   the service: events, scans, recreate and delete jobs
* :mod:`.api`       the ``/api/v0/containers`` routes
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..childenv import ChildEnv
    from ..config import Settings
    from ..feed import Feed
    from ..localapi import Routes
    from ..logsink import LogSink
    from ..manifest import Manifest
    from ..procprio import ChildPriority
    from ..service import Service
    from ..state import StateStore
    from ..status import StatusRegistry

__all__ = ["setup"]


def setup(*, settings: Settings, store: StateStore, sink: LogSink, manifests: Feed[Manifest], command_env: ChildEnv,
          priority: ChildPriority, routes: Routes, status: StatusRegistry) -> list[Service]:
    """Register the container routes; return the devcontainers service (none when disabled)."""
    from . import api

    if not settings.devcontainers_enable:
        for method, path, handler in api.disabled_routes():
            routes.route(method, path, handler)
        status.add("devcontainers", lambda: {"state": "disabled"})
        return []
    from ..childenv import LiveEnv
    from .manager import DevcontainerManager

    # The manager and the routes read the manifest as JSON-like data (its devcontainers, parent_id).
    latest: list[dict[str, Any] | None] = [None]
    mgr = DevcontainerManager(settings, store, sink, manifest=lambda: latest[0],
                              child_env=LiveEnv(command_env.exported), priority=priority)

    def on_manifest(m: Manifest | None) -> None:
        latest[0] = None if m is None else m.model_dump()
        mgr.manifest_changed()

    manifests.subscribe(on_manifest)
    for method, path, handler in api.routes(mgr, lambda: latest[0]):
        routes.route(method, path, handler)
    status.add("devcontainers", mgr.status)
    return [mgr]

