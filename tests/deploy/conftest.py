"""Fixtures for the deployment tests: the Docker engine, the offline base images, the project
image built FROM them with the legacy builder, and a devserver on its own thread.

The devserver runs on a thread with its own event loop because these tests drive blocking tools
(`docker`, `systemctl` through `docker exec`) from the test's thread; a devserver on the test's
loop would stall while they run. The containers use ``--network host`` so they reach it on
127.0.0.1. Everything we create is named ``ca-deploy-*`` (containers) or ``coder-agent/*``
(images) so we only ever remove our own; the engine is shared and never stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coder_agent.devserver import DevAgent, DevServer
from tests.conftest import t, unavailable

ROOT = Path(__file__).resolve().parents[2]
BASE_TAG = "coder-agent/base:bookworm"
SYSTEMD_BASE_TAG = "coder-agent/base:bookworm-systemd"
AGENT_TAG = "coder-agent/agent:deploy-test"
AGENT_SYSTEMD_TAG = "coder-agent/agent:deploy-test-systemd-base"
SYSTEMD_TAG = "coder-agent/agent:deploy-test-systemd"
WHEELHOUSE = ROOT / "build" / "wheelhouse"


def run(cmd: list[str], *, check: bool = True, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, text in and out; on failure the assertion shows its output."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=t(timeout), check=False, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def docker(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run(["docker", *args], check=check, timeout=timeout)


def _need(what: str, why: str) -> None:
    unavailable(f"{what} unavailable: {why}",
                ci_reason=f"{what} unavailable under CI=true: {why} (scripts/provision.sh installs it)")


@pytest.fixture(scope="session")
def engine() -> None:
    """A Docker engine that answers (started if needed; never stopped: it is shared)."""
    if shutil.which("docker") is None and os.geteuid() != 0:
        _need("docker", "no docker CLI and not root")
    p = run(["bash", str(ROOT / "scripts" / "start-dockerd.sh")], check=False, timeout=120)
    if p.returncode != 0 or docker("version", check=False).returncode != 0:
        _need("a Docker engine", (p.stderr or p.stdout).strip()[-500:])


@pytest.fixture(scope="session")
def base_images(engine: None) -> None:
    """The offline Debian bases (cached: a no-op once they exist)."""
    p = run(["bash", str(ROOT / "scripts" / "build-base-image.sh")], check=False, timeout=600)
    if p.returncode != 0:
        _need("the offline base images", p.stderr.strip()[-800:])


def _wheelhouse() -> None:
    """Wheels for every dependency (and the build backend) so the image builds with no index.

    Rebuilt only when pyproject.toml changes (a stamp holds its hash)."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = WHEELHOUSE / ".stamp"
    if stamp.is_file() and stamp.read_text() == digest:
        return
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(WHEELHOUSE),
         "--find-links", str(WHEELHOUSE), str(ROOT), "hatchling"], timeout=600)
    for w in WHEELHOUSE.glob("coder_agent-*.whl"):
        w.unlink()  # the image installs the source tree, never a stale wheel of it
    stamp.write_text(digest)


def image_id(tag: str) -> str:
    return docker("image", "inspect", "-f", "{{.Id}}", tag, check=False).stdout.strip()


def legacy_build(tag: str, *args: str, timeout: float = 600) -> None:
    """`docker build` with the legacy builder (no buildx here); drops the image it replaces."""
    old = image_id(tag)
    run(["docker", "build", "-q", "-t", tag, *args], timeout=timeout, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    if old and old != image_id(tag):
        docker("rmi", old, check=False)  # our previous build of this tag; in use elsewhere -> kept


def build_agent_image(tag: str, base: str) -> None:
    """The project's Dockerfile FROM ``base``, offline (pip installs from the wheelhouse)."""
    _wheelhouse()
    legacy_build(tag, "--build-arg", f"BASE={base}",
                 "--build-arg", "PIP_INSTALL_ARGS=--no-index --find-links=/tmp/src/build/wheelhouse", str(ROOT))


@pytest.fixture(scope="session")
def agent_image(base_images: None) -> str:
    build_agent_image(AGENT_TAG, BASE_TAG)
    return AGENT_TAG


@pytest.fixture(scope="session")
def systemd_image(base_images: None) -> str:
    """The project image on the systemd base, with systemd/coder-agent.service installed."""
    build_agent_image(AGENT_SYSTEMD_TAG, SYSTEMD_BASE_TAG)
    legacy_build(SYSTEMD_TAG, "--build-arg", f"BASE={AGENT_SYSTEMD_TAG}",
                 "-f", str(ROOT / "tests" / "deploy" / "systemd.Dockerfile"), str(ROOT / "systemd"))
    return SYSTEMD_TAG


@pytest.fixture
def containers() -> Iterator[Callable[[], str]]:
    """Hands out unique container names; removes those containers afterwards."""
    names: list[str] = []

    def new() -> str:
        name = f"ca-deploy-{uuid.uuid4().hex[:10]}"
        names.append(name)
        return name

    yield new
    for n in names:
        docker("rm", "-f", "-v", n, check=False)


class ThreadedDevServer:
    """A DevServer on its own thread and loop; ``call(fn)`` runs ``fn()`` on that loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ds = DevServer(agents=[DevAgent()])
        self._thread = threading.Thread(target=self.loop.run_forever, name="devserver", daemon=True)

    def start(self) -> ThreadedDevServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.ds.start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.ds.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @property
    def url(self) -> str:
        return self.ds.url

    @property
    def token(self) -> str:
        return self.ds.agent.token

    def requests_to(self, fragment: str) -> list[Any]:
        async def get() -> list[Any]:
            return self.ds.requests_to(fragment)

        return asyncio.run_coroutine_threadsafe(get(), self.loop).result(10)


@pytest.fixture
def threaded_devserver() -> Iterator[ThreadedDevServer]:
    ds = ThreadedDevServer().start()
    yield ds
    ds.stop()
