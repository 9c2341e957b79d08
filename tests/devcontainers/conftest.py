"""Fixtures for the devcontainer tests: the real engine, the real Dev Containers CLI, an
in-process manager behind a real local API socket, and cleanup of only our own containers.

Locally, run ``scripts/provision.sh`` first (as root). Under CI=true a missing engine, image or
CLI fails the tests with the fix; elsewhere those tests skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coder_agent.config import load_settings
from coder_agent.devcontainers import api as dc_api
from coder_agent.devcontainers.manager import DevcontainerManager
from coder_agent.localapi import LocalAPI
from coder_agent.logsink import MemoryLogSink
from coder_agent.state import StateStore

from ..conftest import unavailable

IMAGE = "local/busybox:latest"
TEST_LABEL = "coder-agent.test"
# PID 1 that exits on SIGTERM at once (busybox sh ignores it as PID 1 otherwise: 10 s stops)
SLEEPER = ["/bin/sh", "-c", "trap 'exit 0' TERM; while sleep 1 & wait $!; do :; done"]
FIX = "run scripts/provision.sh as root (it starts dockerd, builds local/busybox and installs the CLI)"


def _missing(what: str) -> None:
    unavailable(f"{what}; {FIX}", ci_reason=f"{what} ({FIX})")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as e:
        _missing(f"no Docker engine answers at {os.environ.get('DOCKER_HOST', '/var/run/docker.sock')}: {e}")
    try:
        client.images.get(IMAGE)
    except Exception:
        _missing(f"image {IMAGE} is missing")
    yield client
    client.close()


@pytest.fixture(scope="session")
def cli_path() -> str:
    path = os.environ.get("CODER_AGENT_DEVCONTAINERS_CLI") or shutil.which("devcontainer") or \
        "/opt/coder-agent/devcontainers-cli/node_modules/.bin/devcontainer"
    if not os.access(path, os.X_OK):
        _missing("the Dev Containers CLI (devcontainer) is not installed")
    return path


@pytest.fixture
def tag(docker_client: Any, short_tmp: Path) -> Iterator[str]:
    """A unique label value; every container carrying it (or a devcontainer label under our
    temp dir) is removed afterwards. Nobody else's containers are touched."""
    value = f"t{uuid.uuid4().hex[:10]}"
    yield value
    for c in docker_client.containers.list(all=True, sparse=True):
        labels = c.attrs.get("Labels") or {}
        if labels.get(TEST_LABEL) == value or labels.get("devcontainer.local_folder", "").startswith(str(short_tmp)):
            with contextlib.suppress(Exception):
                c.remove(force=True)


@pytest.fixture
def run_container(docker_client: Any, tag: str) -> Callable[..., Any]:
    def run(name: str | None = None, labels: dict[str, str] | None = None, start: bool = True, **kw: Any) -> Any:
        kw.setdefault("command", SLEEPER)
        c = docker_client.containers.create(
            IMAGE, name=f"{tag}-{name}" if name else None, labels={TEST_LABEL: tag, **(labels or {})}, **kw)
        if start:
            c.start()
        c.reload()
        return c

    return run


def git_repo(path: Path, files: dict[str, str], gitignore: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    for rel, text in files.items():
        f = path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    if gitignore:
        (path / ".gitignore").write_text(gitignore)
    return path


class Harness:
    def __init__(self, mgr: DevcontainerManager, sink: MemoryLogSink, address: str) -> None:
        self.mgr = mgr
        self.sink = sink
        self.address = address
        self.http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=address[5:]),
                                      base_url="http://agent", timeout=30)

    def mine(self, doc: dict[str, Any], tag: str) -> list[dict[str, Any]]:
        return [c for c in doc["containers"] if c["labels"].get(TEST_LABEL) == tag]

    def dc(self, doc: dict[str, Any], folder: str | Path) -> dict[str, Any] | None:
        return next((d for d in doc["devcontainers"] if d["workspace_folder"] == str(folder)), None)

    def lines(self) -> list[str]:
        return [ln.output for ln in self.sink.lines]


@pytest.fixture
async def harness(short_tmp: Path, docker_client: Any) -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[asyncio.Task[None], LocalAPI, Harness]] = []

    async def start(workspace: Path | None = None, manifest: dict[str, Any] | None = None,
                    **env: str) -> Harness:
        n = len(started)
        ws = workspace or (short_tmp / "ws")
        ws.mkdir(parents=True, exist_ok=True)
        settings = load_settings(env={
            "CODER_AGENT_URL": "http://127.0.0.1:1", "CODER_AGENT_TOKEN": "t",
            "CODER_AGENT_STATE_DIR": str(short_tmp / f"state{n}"), "CODER_AGENT_LOG_DIR": str(short_tmp / "logs"),
            "CODER_AGENT_DIRECTORY": str(ws), **env})
        sink = MemoryLogSink()
        mgr = DevcontainerManager(settings, StateStore(settings.state_dir), sink, manifest=lambda: manifest)
        api = LocalAPI(f"unix:{short_tmp / f'api{n}.sock'}")
        for method, path, handler in dc_api.routes(mgr, lambda: manifest):
            api.route(method, path, handler)
        await api.start()
        task = asyncio.create_task(mgr.run())
        h = Harness(mgr, sink, api.address)
        started.append((task, api, h))
        await mgr.wait_first_scan(30)
        return h

    yield start
    for task, api, h in started:
        await h.mgr.drain()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await h.http.aclose()
        await api.stop()
