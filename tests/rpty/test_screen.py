"""The screen backend with the real GNU screen."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from coder_agent.childenv import ChildEnv
from coder_agent.rpty import InitRequest, RptyServer
from coder_agent.rpty.screen import SETTINGS, screen_config
from coder_agent.rpty.server import backend_for

from ..conftest import apoll, unavailable
from .client import Client


def test_backend_choice() -> None:
    env = {"PATH": "/nonexistent"}
    assert backend_for(InitRequest(backend_type="screen"), env) == "buffered"
    if shutil.which("screen"):
        import os

        path = {"PATH": os.environ["PATH"]}
        assert backend_for(InitRequest(backend_type="Screen"), path) == "screen"
        assert backend_for(InitRequest(backend_type=""), path) == "buffered"
        assert backend_for(InitRequest(backend_type="buffered"), path) == "buffered"


def test_config_is_gos() -> None:
    p = screen_config()
    assert p.read_text().splitlines() == SETTINGS
    assert p.stat().st_mode & 0o777 == 0o600


def screen_alive(name: str) -> bool:
    out = subprocess.run(["screen", "-ls", name], capture_output=True, text=True).stdout
    return f".{name}\t" in out


@pytest.fixture
def screen() -> None:
    if shutil.which("screen") is None:
        unavailable("GNU screen is not installed (scripts/provision.sh installs it)")


async def test_screen_session_survives_a_reconnect_and_is_quit_on_close(tmp_path: Path, screen: None) -> None:
    srv = RptyServer(ChildEnv(agent_env={}, data_base=tmp_path), directory=str(tmp_path))
    port = await srv.start()
    try:
        key = str(uuid.uuid4())
        a = await Client.open(port, key, "sh", height=27, width=91, backend_type="screen")
        await a.send("stty size; echo M$((40+2))\r")
        await a.expect(r"27 91\s+M42", timeout=30)
        session = srv.sessions[key]
        assert session.backend == "screen"
        name = session.name  # type: ignore[attr-defined]
        assert screen_alive(name)
        await a.close()
        await apoll(lambda: srv.connections == 0)
        assert screen_alive(name)  # detached, not ended
        b = await Client.open(port, key, height=30, width=100, backend_type="screen")
        await b.expect("M42", timeout=30)  # screen redraws the same shell's screen
        await b.send("stty size; echo N$((5+5))\r")
        await b.expect(r"30 100\s+N10", timeout=30)
        await srv.close()
        await b.closed()
        await apoll(lambda: not screen_alive(name), timeout=20)
    finally:
        await srv.close()


async def test_screen_command_exit_closes_the_connection(tmp_path: Path, screen: None) -> None:
    srv = RptyServer(ChildEnv(agent_env={}, data_base=tmp_path))
    port = await srv.start()
    try:
        key = str(uuid.uuid4())
        a = await Client.open(port, key, "sh", backend_type="screen")
        await a.send("echo up-$((1+1))\r")
        await a.expect("up-2", timeout=30)
        name = srv.sessions[key].name  # type: ignore[attr-defined]
        await a.send("exit\r")
        await a.closed(timeout=30)
        await apoll(lambda: not screen_alive(name), timeout=20)
    finally:
        await srv.close()
