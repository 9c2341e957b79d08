"""A log pipeline in the test's event loop, shipping to the devserver over loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from coder_agent.coderapi.client import CoderClient, FixedToken
from coder_agent.devserver import DevServer
from coder_agent.logs import LogPipeline, RestTransport
from coder_agent.state import StateStore


class Running:
    def __init__(self, make: Callable[..., LogPipeline]) -> None:
        self.make = make
        self.pipeline: LogPipeline | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self, **kw: Any) -> LogPipeline:
        self.pipeline = self.make(**kw)
        self.task = asyncio.create_task(self.pipeline.run())
        return self.pipeline

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        if self.pipeline is not None:
            self.pipeline.close()


@pytest.fixture
async def pipe(devserver: DevServer, tmp_path: Path) -> AsyncIterator[Running]:
    client = CoderClient(devserver.url, FixedToken(devserver.agent.token), timeout=5.0)

    def make(**kw: Any) -> LogPipeline:
        return LogPipeline(log_dir=tmp_path / "logs", store=StateStore(tmp_path / "state"),
                           transport=RestTransport(client), **kw)

    r = Running(make)
    yield r
    await r.stop()
    await client.aclose()


def outputs(ds: DevServer, source_id: str | None = None) -> list[str]:
    return [row["output"] for row in ds.agent.logs if source_id is None or row["log_source_id"] == source_id]
