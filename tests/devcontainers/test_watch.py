"""devcontainer.json files found through inotify (no poll), and the slow poll where it is off.

No engine here: DOCKER_HOST names a socket that does not exist, so only discovery is at work.
Real git repositories, real files, the real kernel's inotify, the manager behind a real local
API socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from coder_agent import inotify as ino
from coder_agent.config import load_settings
from coder_agent.devcontainers import api as dc_api
from coder_agent.devcontainers.manager import DevcontainerManager
from coder_agent.devcontainers.watch import classify
from coder_agent.localapi import LocalAPI
from coder_agent.logsink import MemoryLogSink
from coder_agent.state import StateStore

from ..conftest import apoll, t
from .conftest import git_repo

CFG = '{"image": "local/busybox:latest"}'


class Running:
    def __init__(self, mgr: DevcontainerManager, http: httpx.AsyncClient) -> None:
        self.mgr = mgr
        self.http = http

    async def folders(self) -> set[str]:
        r = await self.http.get("/api/v0/containers")
        assert r.status_code == 200, r.text
        return {d["workspace_folder"] for d in r.json()["devcontainers"]}

    async def appears(self, folder: Path, within: float) -> float:
        start = time.monotonic()
        while str(folder) not in await self.folders():
            assert time.monotonic() - start < t(within), f"{folder} not listed within {t(within)} s"
            await asyncio.sleep(0.05)
        return time.monotonic() - start


@pytest.fixture
async def manager(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{short_tmp}/no-docker.sock")
    started: list[tuple[asyncio.Task[None], LocalAPI, httpx.AsyncClient]] = []

    async def start(**env: str) -> Running:
        n = len(started)
        settings = load_settings(env={
            "CODER_AGENT_URL": "http://127.0.0.1:1", "CODER_AGENT_TOKEN": "t",
            "CODER_AGENT_STATE_DIR": str(short_tmp / f"state{n}"), "CODER_AGENT_LOG_DIR": str(short_tmp / "logs"),
            "CODER_AGENT_DIRECTORY": str(short_tmp / "ws"), **env})
        mgr = DevcontainerManager(settings, StateStore(settings.state_dir), MemoryLogSink())
        api = LocalAPI(f"unix:{short_tmp / f'api{n}.sock'}")
        for method, path, handler in dc_api.routes(mgr, lambda: None):
            api.route(method, path, handler)
        await api.start()
        http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=api.address[5:]), base_url="http://agent",
                                 timeout=30)
        started.append((asyncio.create_task(mgr.run()), api, http))
        await mgr.wait_first_scan(30)
        return Running(mgr, http)

    yield start
    for task, api, http in started:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await http.aclose()
        await api.stop()


async def test_new_devcontainer_json_appears_through_inotify(manager: Callable[..., Any], short_tmp: Path) -> None:
    ws = short_tmp / "ws"
    repo = git_repo(ws / "repo", {"src/main.py": "print()\n"})
    # an hour between polls: only inotify can bring the news
    r: Running = await manager(CODER_AGENT_DEVCONTAINERS_POLL_INTERVAL="3600")
    await apoll(lambda: r.mgr.status()["watch"] == "inotify" and r.mgr._discovered == [], timeout=10)
    await asyncio.sleep(0.2)  # let the first discovery's watches settle
    assert await r.folders() == set()

    (repo / ".devcontainer").mkdir()
    (repo / ".devcontainer" / "devcontainer.json").write_text(CFG)
    await r.appears(repo, within=2)

    # a file in a directory created after the start (watched as it appears)
    (repo / "tools" / "x").mkdir(parents=True)
    (repo / "tools" / "x" / ".devcontainer.json").write_text(CFG)
    await r.appears(repo / "tools" / "x", within=2)

    # a new repository next to the first
    other = git_repo(ws / "other", {".devcontainer/devcontainer.json": CFG})
    await r.appears(other, within=2)

    # removed: gone from the list
    (repo / ".devcontainer" / "devcontainer.json").unlink()
    start = time.monotonic()
    while str(repo) in await r.folders():
        assert time.monotonic() - start < t(2)
        await asyncio.sleep(0.05)
    assert r.mgr.status()["watch"] == "inotify" and r.mgr.status()["watch_reason"] == ""


async def test_inotify_off_polls_at_the_configured_period(manager: Callable[..., Any], short_tmp: Path) -> None:
    repo = git_repo(short_tmp / "ws" / "repo", {"README": "x\n"})
    r: Running = await manager(CODER_AGENT_DEVCONTAINERS_INOTIFY="false", CODER_AGENT_DEVCONTAINERS_POLL_INTERVAL="1")
    st = r.mgr.status()
    assert st["watch"] == "poll" and "devcontainers.inotify" in st["watch_reason"]
    (repo / ".devcontainer").mkdir()
    (repo / ".devcontainer" / "devcontainer.json").write_text(CFG)
    await r.appears(repo, within=1 + 2)


async def test_too_many_directories_fall_back_to_the_poll_and_say_why(manager: Callable[..., Any],
                                                                     short_tmp: Path) -> None:
    repo = git_repo(short_tmp / "ws" / "repo", {f"d{i}/f": "x\n" for i in range(5)})
    r: Running = await manager(CODER_AGENT_DEVCONTAINERS_WATCH_LIMIT="3", CODER_AGENT_DEVCONTAINERS_POLL_INTERVAL="1")
    await apoll(lambda: r.mgr.status()["watch"] == "poll", timeout=10)
    assert "devcontainers.watch_limit" in r.mgr.status()["watch_reason"]
    (repo / ".devcontainer.json").write_text(CFG)
    await r.appears(repo, within=1 + 2)


def test_classify() -> None:
    dirs = {1: "/w", 2: "/w/r"}
    ev = ino.Event
    c = classify([ev(2, ino.IN_CLOSE_WRITE, 0, "devcontainer.json")], dirs)
    assert c.config and not c.discovery
    c = classify([ev(2, ino.IN_CREATE, 0, ".devcontainer.json")], dirs)
    assert c.config and c.discovery
    c = classify([ev(2, ino.IN_CREATE | ino.IN_ISDIR, 0, "sub")], dirs)
    assert c.new_dirs == ["/w/r/sub"] and c.discovery
    c = classify([ev(2, ino.IN_CREATE | ino.IN_ISDIR, 0, "node_modules")], dirs)
    assert c.new_dirs == [] and not c.discovery  # a dependency tree: never watched
    c = classify([ev(1, ino.IN_CREATE | ino.IN_ISDIR, 0, ".git")], dirs)
    assert c.discovery and c.new_dirs == []  # never watch inside .git
    c = classify([ev(2, ino.IN_CLOSE_WRITE, 0, "main.py"), ev(9, ino.IN_CREATE, 0, "x.json")], dirs)
    assert not (c.config or c.discovery or c.new_dirs)  # ordinary files, unknown watches: nothing to do
    c = classify([ev(2, ino.IN_CLOSE_WRITE, 0, ".gitignore"), ev(2, ino.IN_IGNORED, 0, "")], dirs)
    assert c.discovery and c.gone == [2]
    c = classify([ev(-1, ino.IN_Q_OVERFLOW, 0, "")], dirs)
    assert c.overflow and c.discovery and c.config
