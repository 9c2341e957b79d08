"""Logs: every source's lines to a complete local file and on to Coder, within its limits.

The pieces: :mod:`.text` (pure: sanitise, split, file format), :mod:`.batch` (pure: batch and
1 MiB cap policy), :mod:`.files` (the local files, which are also the durable queue),
:mod:`.transport` (REST now; the agent RPC adds BatchCreateLogs behind the same interface),
:mod:`.pipeline` (the daemon's LogSink and the shipper), :mod:`.follow` (``[[log_sources]]``
files), :mod:`.api` (``POST /api/v0/logs``).

``setup(daemon)`` replaces ``daemon.log_sink`` with the pipeline; to switch transports later set
``pipeline.transport`` (it is read before every request).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..service import Health
from .pipeline import LogPipeline
from .transport import Entry, LogTransport, RestTransport, SendResult

if TYPE_CHECKING:
    from ..daemon import Daemon
    from ..service import Service

__all__ = ["Entry", "LogPipeline", "LogTransport", "RestTransport", "SendResult", "setup"]


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


def setup(daemon: Daemon) -> list[Service]:
    from .api import LogsAPI
    from .follow import FileFollower
    from ..retention import Retention

    pipeline = LogPipeline(log_dir=daemon.settings.log_dir, store=daemon.store,
                           transport=RestTransport(daemon.client), clock=daemon.clock,
                           retention=Retention(max_age=daemon.settings.log_retention))
    daemon.log_sink = pipeline
    api = LogsAPI(pipeline)
    daemon.local_api.route("POST", "/api/v0/logs", api.post_logs)
    followers = [FileFollower(cfg, pipeline, daemon.store) for cfg in daemon.settings.log_sources]
    for i, f in enumerate(followers):  # service names must be unique
        if any(g.name == f.name for g in followers[:i]):
            f.name = f"{f.name}#{i}"

    def status() -> dict[str, Any]:
        st = pipeline.status()
        st["followed_files"] = {f.cfg.display_name: f.status() for f in followers}
        return st

    daemon.status_extras["logs"] = status
    return [_Shipper(pipeline), *followers]
