"""Prebuild reinit: when coderd says a prebuilt workspace was claimed, start the agent session
over in place, exactly once per claim.

* :mod:`.claim` — the event payload and the exactly-once decision (pure).
* :mod:`.watcher` — the service that holds GET /me/reinit?wait=true open (read with httpx-sse) and calls
  :meth:`coder_agent.daemon.Daemon.reinitialize`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..service import Service

if TYPE_CHECKING:
    from ..daemon import Daemon

__all__ = ["setup"]


def _manifest_workspace_id(daemon: Daemon) -> str | None:
    m: Any = daemon.manifest
    if isinstance(m, dict):
        ws = m.get("workspace_id")
        return ws if isinstance(ws, str) and ws else None
    return None


def setup(daemon: Daemon) -> list[Service]:
    from .watcher import ReinitWatcher

    watcher = ReinitWatcher(
        daemon.client, daemon.store, daemon.reinitialize,
        clock=daemon.clock,
        ping_interval=daemon.settings.reinit_ping_interval,
        workspace_id=lambda: _manifest_workspace_id(daemon),
        refresh_token=daemon.tokens.refresh,
        scrub=daemon.redactor.scrub,
    )
    daemon.status_extras["reinit"] = watcher.status
    return [watcher]
