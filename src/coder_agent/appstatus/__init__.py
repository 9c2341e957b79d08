"""App status: tools in the workspace say what they are doing; the daemon delivers it to Coder.

A tool (an AI agent, a build script) posts ``agentsdk.PatchAppStatus`` to the local API
(``POST /api/v0/app-status``) or runs ``coder-agent app-status``; the daemon validates it as
coderd would, keeps it durably, de-duplicates and coalesces it (:mod:`.core`), and delivers it
with retries through an :class:`~.transport.AppStatusTransport` (REST ``PATCH
/api/v2/workspaceagents/me/app-status`` today; dRPC ``UpdateAppStatus`` plugs in at the same
seam). ``GET /api/v0/app-status`` and ``coder-agent status`` show where each status stands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .core import MAX_MESSAGE_BYTES, STATES, AppStatus, AppStatusQueue, Invalid, Ticket, validate
from .transport import AppStatusTransport, RestTransport

if TYPE_CHECKING:
    from ..clock import Clock
    from ..coderapi.client import CoderClient
    from ..feed import Feed
    from ..localapi import Routes
    from ..manifest import Manifest
    from ..metrics import Metrics
    from ..service import Service
    from ..state import StateStore
    from ..status import StatusRegistry
    from .service import AppStatusService

__all__ = [
    "MAX_MESSAGE_BYTES",
    "STATES",
    "AppStatus",
    "AppStatusQueue",
    "AppStatusTransport",
    "Invalid",
    "RestTransport",
    "Ticket",
    "make_service",
    "manifest_app_slugs",
    "setup",
    "validate",
]


def manifest_app_slugs(manifest: Manifest | None) -> list[str] | None:
    """The slugs of the manifest's apps, or None while no manifest is known."""
    return None if manifest is None else manifest.app_slugs()


def make_service(*, client: CoderClient, store: StateStore, clock: Clock, scrub: Callable[[str], str],
                 metrics: Metrics, manifests: Feed[Manifest]) -> AppStatusService:
    """The delivery service (REST until the agent session switches its transport to dRPC)."""
    from .service import AppStatusService

    slugs: list[list[str] | None] = [None]

    def on_manifest(m: Manifest | None) -> None:
        slugs[0] = manifest_app_slugs(m)

    manifests.subscribe(on_manifest)
    return AppStatusService(RestTransport(client), store, clock, app_slugs=lambda: slugs[0], scrub=scrub,
                            metrics=metrics)


def setup(svc: AppStatusService, *, routes: Routes, status: StatusRegistry) -> list[Service]:
    """Register the local API routes and the status key; return the delivery service."""
    routes.route("POST", "/api/v0/app-status", svc.handle_post)
    routes.route("GET", "/api/v0/app-status", svc.handle_get)
    status.add("app_status", svc.status_extra)
    return [svc]
