"""App status: tools in the workspace say what they are doing; the daemon delivers it to Coder.

A tool (an AI agent, a build script) posts ``agentsdk.PatchAppStatus`` to the local API
(``POST /api/v0/app-status``) or runs ``coder-agent app-status``; the daemon validates it as
coderd would, keeps it durably, de-duplicates and coalesces it (:mod:`.core`), and delivers it
with retries through an :class:`~.transport.AppStatusTransport` (REST ``PATCH
/api/v2/workspaceagents/me/app-status`` today; dRPC ``UpdateAppStatus`` plugs in at the same
seam). ``GET /api/v0/app-status`` and ``coder-agent status`` show where each status stands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core import MAX_MESSAGE_BYTES, STATES, AppStatus, AppStatusQueue, Invalid, Ticket, validate
from .transport import AppStatusTransport, RestTransport

if TYPE_CHECKING:
    from ..daemon import Daemon
    from ..service import Service

__all__ = [
    "MAX_MESSAGE_BYTES",
    "STATES",
    "AppStatus",
    "AppStatusQueue",
    "AppStatusTransport",
    "Invalid",
    "RestTransport",
    "Ticket",
    "manifest_app_slugs",
    "setup",
    "validate",
]


def manifest_app_slugs(manifest: dict[str, Any] | None) -> list[str] | None:
    """The slugs of the manifest's apps, or None while no manifest is known."""
    if manifest is None:
        return None
    apps = manifest.get("apps") or []
    return [str(a["slug"]) for a in apps if isinstance(a, dict) and a.get("slug")]


def setup(daemon: Daemon) -> list[Service]:
    """Register the local API routes and the status key; return the delivery service."""
    from .service import AppStatusService

    svc = AppStatusService(
        RestTransport(daemon.client), daemon.store, daemon.clock,
        app_slugs=lambda: manifest_app_slugs(daemon.manifest),
        scrub=daemon.redactor.scrub, metrics=daemon.metrics,
    )
    daemon.local_api.route("POST", "/api/v0/app-status", svc.handle_post)
    daemon.local_api.route("GET", "/api/v0/app-status", svc.handle_get)
    daemon.status_extras["app_status"] = svc.status_extra
    return [svc]
