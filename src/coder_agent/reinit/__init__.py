"""Prebuild reinit: when coderd says a prebuilt workspace was claimed, start the agent session
over in place, exactly once per claim.

* :mod:`.claim` — the event payload and the exactly-once decision (pure).
* :mod:`.watcher` — the service that holds GET /me/reinit?wait=true open (read with httpx-sse) and calls
  ``reinitialize`` (:meth:`coder_agent.sessionowner.SessionOwner.reinitialize`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..service import Service

if TYPE_CHECKING:
    from ..clock import Clock
    from ..coderapi.client import CoderClient
    from ..config import Settings
    from ..feed import Feed
    from ..manifest import Manifest
    from ..state import StateStore
    from ..status import StatusRegistry

__all__ = ["setup"]


def setup(*, settings: Settings, client: CoderClient, store: StateStore, clock: Clock, manifests: Feed[Manifest],
          reinitialize: Callable[[str], Awaitable[None]], refresh_token: Callable[[], Awaitable[str]],
          scrub: Callable[[str], str], status: StatusRegistry) -> list[Service]:
    from .watcher import ReinitWatcher

    workspace: list[str | None] = [None]  # the workspace id of the latest manifest

    def on_manifest(m: Manifest | None) -> None:
        workspace[0] = (m.workspace_id or None) if m is not None else None

    manifests.subscribe(on_manifest)
    watcher = ReinitWatcher(
        client, store, reinitialize,
        clock=clock,
        ping_interval=settings.reinit_ping_interval,
        workspace_id=lambda: workspace[0],
        refresh_token=refresh_token,
        scrub=scrub,
    )
    status.add("reinit", watcher.status)
    return [watcher]
