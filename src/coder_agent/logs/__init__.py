"""Logs: every source's lines to a complete local file and on to Coder, within its limits.

The pieces: :mod:`.text` (pure: sanitise, split, file format), :mod:`.batch` (pure: batch and
1 MiB cap policy), :mod:`.files` (the local files, which are also the durable queue),
:mod:`.transport` (REST now; the agent RPC adds BatchCreateLogs behind the same interface),
:mod:`.pipeline` (the daemon's LogSink and the shipper), :mod:`.follow` (``[[log_sources]]``
files), :mod:`.api` (``POST /api/v0/logs``).

:func:`make_pipeline` builds the daemon's log sink (the composition root hands it to every
capability that writes lines); :func:`setup` serves it. To switch transports later set
``pipeline.transport`` (it is read before every request).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..service import Health
from .pipeline import LogPipeline
from .transport import Entry, LogTransport, RestTransport, SendResult

if TYPE_CHECKING:
    from ..clock import Clock
    from ..coderapi.client import CoderClient
    from ..config import Settings
    from ..localapi import Routes
    from ..metrics import Metrics
    from ..service import Service
    from ..state import StateStore
    from ..status import StatusRegistry

__all__ = ["Entry", "LogPipeline", "LogTransport", "RestTransport", "SendResult", "make_pipeline", "setup"]


class _Shipper:
    """The pipeline as a supervised service; closes the files when the daemon stops."""

    name = "logs"

    def __init__(self, pipeline: LogPipeline) -> None:
        self.pipeline = pipeline
        self.health: Health = pipeline.health

    async def run(self) -> None:
        try:
            await self.pipeline.run()
        except asyncio.CancelledError:
            self.pipeline.close()
            raise

    async def drain(self) -> None:
        await self.pipeline.drain()


def make_pipeline(*, settings: Settings, store: StateStore, client: CoderClient, clock: Clock,
                  metrics: Metrics | None = None) -> LogPipeline:
    """The daemon's log sink: local files, shipped to Coder (REST until the agent session plugs in dRPC)."""
    from ..retention import Retention

    return LogPipeline(log_dir=settings.log_dir, store=store, transport=RestTransport(client), clock=clock,
                       retention=Retention(max_age=settings.log_retention), metrics=metrics)


def setup(pipeline: LogPipeline, *, settings: Settings, store: StateStore, routes: Routes,
          status: StatusRegistry) -> list[Service]:
    from .api import LogsAPI
    from .follow import FileFollower

    api = LogsAPI(pipeline)
    routes.route("POST", "/api/v0/logs", api.post_logs)
    followers = [FileFollower(cfg, pipeline, store) for cfg in settings.log_sources]
    for i, f in enumerate(followers):  # service names must be unique
        if any(g.name == f.name for g in followers[:i]):
            f.name = f"{f.name}#{i}"

    def logs_status() -> dict[str, Any]:
        st = pipeline.status()
        st["followed_files"] = {f.cfg.display_name: f.status() for f in followers}
        return st

    status.add("logs", logs_status)
    return [_Shipper(pipeline), *followers]
