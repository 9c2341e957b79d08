"""Fixtures for auth tests: the fake metadata server and a devserver knowing one agent per cloud."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from coder_agent.devserver import DevAgent, DevServer
from coder_agent.devserver.metadata import MetadataServer


@pytest.fixture
async def ms() -> AsyncIterator[MetadataServer]:
    async with MetadataServer() as server:
        yield server


@pytest.fixture
async def ids(ms: MetadataServer) -> AsyncIterator[DevServer]:
    """A devserver with one agent per cloud, each bound to the fake metadata server's instance."""
    agents = [
        DevAgent(name="aws", instance_id=ms.aws_instance_id),
        DevAgent(name="azure", instance_id=ms.azure_vm_id),
        DevAgent(name="gcp", instance_id=ms.gcp_instance_id),
    ]
    async with DevServer(agents=agents) as ds:
        yield ds
