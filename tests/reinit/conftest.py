"""Reinit fixtures: a devserver whose agent is a prebuild, with fast pings."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from coder_agent.devserver import DevAgent, DevServer
from coder_agent.devserver.reinit import ReinitHub, hub, mark_prebuild

PING = 0.2  # seconds between the devserver's keep-alives in these tests


@pytest.fixture
async def prebuild_ds() -> AsyncIterator[DevServer]:
    agent = DevAgent()
    mark_prebuild(agent)
    async with DevServer(agents=[agent]) as ds:
        hub(ds).ping_interval = PING
        yield ds


@pytest.fixture
def reinit_hub(prebuild_ds: DevServer) -> ReinitHub:
    return hub(prebuild_ds)
