"""How an app status reaches coderd: a small transport interface and its REST implementation.

Rules: ``update_app_status`` sends one status and returns once coderd accepted it (200); it
raises :class:`~coder_agent.errors.ApiError` when coderd refused it and
:class:`~coder_agent.errors.TransportError` when no answer came. It never retries: the service
does, with :mod:`coder_agent.retry`. A 401 is handled by :class:`CoderClient` (token refresh
and one retry) before anything reaches here.

The seam: the agent RPC (dRPC ``UpdateAppStatus``) adds a second implementation and the service
is given whichever the connected server offers; the queue does not change.
"""

from __future__ import annotations

from typing import Protocol

from ..coderapi import models
from ..coderapi.client import CoderClient
from .core import AppStatus

__all__ = ["AppStatusTransport", "RestTransport"]


class AppStatusTransport(Protocol):
    name: str

    async def update_app_status(self, status: AppStatus) -> None: ...


class RestTransport:
    """``PATCH /api/v2/workspaceagents/me/app-status`` through the daemon's CoderClient."""

    name = "rest"

    def __init__(self, client: CoderClient) -> None:
        self._client = client

    async def update_app_status(self, status: AppStatus) -> None:
        await self._client.patch_app_status(models.PatchAppStatus.model_validate(status.as_dict()))
