"""A reconnecting PTY inside a container, through the real Docker engine and CLI."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from coder_agent.childenv import ChildEnv
from coder_agent.rpty import RptyServer
from coder_agent.rpty.container import docker_exec_argv, passwd_shell

from ..conftest import apoll, t, unavailable
from .client import Client

IMAGE = "local/busybox:latest"
FIX = "run scripts/provision.sh as root (it starts dockerd and builds local/busybox)"
SLEEPER = "trap 'exit 0' TERM; while sleep 1 & wait $!; do :; done"


def test_docker_exec_argv_is_gos() -> None:
    assert docker_exec_argv("c1", "", "/bin/bash", "") == \
        ["docker", "exec", "--interactive", "--tty", "c1", "/bin/bash", "-l"]
    assert docker_exec_argv("c1", "dev", "/bin/zsh", "top") == \
        ["docker", "exec", "--interactive", "--tty", "--user", "dev", "c1", "/bin/zsh", "-c", "top"]


def test_passwd_shell() -> None:
    text = "root:x:0:0:root:/root:/bin/ash\n\nnobody:x:65534:65534::/:\nsvc:x:2:2::/:/sbin/nologin\n" \
        "daemon:x:1:1::/:/bin/false\ndev:x:1000:1000:Dev,,,:/home/dev:/bin/zsh\n"
    assert passwd_shell(text, "root") == "/bin/ash"
    assert passwd_shell(text, "dev") == "/bin/zsh"
    assert passwd_shell(text, "nobody") is None
    assert passwd_shell(text, "svc") is None and passwd_shell(text, "daemon") is None
    assert passwd_shell(text, "ghost") is None
    assert passwd_shell(text, "de") is None


@pytest.fixture
def container() -> Iterator[str]:
    if shutil.which("docker") is None:
        unavailable(f"no docker CLI; {FIX}")
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        unavailable(f"no Docker engine or no {IMAGE}; {FIX}")
    name = f"rpty-test-{uuid.uuid4().hex[:10]}"
    subprocess.run(["docker", "run", "-d", "--name", name, "--label", "coder-agent.test=rpty", IMAGE,
                    "/bin/sh", "-c", SLEEPER], check=True, capture_output=True, timeout=t(60))
    try:
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=t(60))


@pytest.mark.docker
async def test_session_runs_inside_the_container(tmp_path: Path, container: str) -> None:
    srv = RptyServer(ChildEnv(agent_env={}, data_base=tmp_path))
    port = await srv.start()
    try:
        key = str(uuid.uuid4())
        c = await Client.open(port, key, "", height=30, width=90, container=container)
        await c.expect("# ", timeout=30)  # the container's shell is up (typed-ahead input races docker's set-up)
        await c.send("echo in-$((2+3)) $(whoami) $(hostname); stty size\r")
        await c.expect(r"in-5 root \w+\r\n30 90", timeout=30)
        await c.close()
        # Reattach: replayed, and still the same shell in the container.
        c2 = await Client.open(port, key)
        await c2.expect("in-5 root")
        await c2.send("exit\r")
        await c2.closed(timeout=30)
        await apoll(lambda: not srv.sessions)
        # ContainerUser and Command.
        c3 = await Client.open(port, str(uuid.uuid4()), "id -u; echo done-$((1+1))", container=container,
                               container_user="nobody")
        out = await c3.closed(timeout=30)
        assert b"65534" in out and b"done-2" in out
    finally:
        await srv.close()


@pytest.mark.docker
async def test_missing_container_ends_the_connection_with_the_reason(tmp_path: Path) -> None:
    if shutil.which("docker") is None:
        unavailable(f"no docker CLI; {FIX}")
    events: list[tuple[int, str]] = []
    srv = RptyServer(ChildEnv(agent_env={}, data_base=tmp_path),
                     on_disconnect=lambda cid, ip, code, why: events.append((code, why)))
    port = await srv.start()
    try:
        c = await Client.open(port, str(uuid.uuid4()), container=f"no-such-{uuid.uuid4().hex[:8]}")
        await c.closed(timeout=30)
        await apoll(lambda: events)
        assert events[0][0] == 1 and "no such container" in events[0][1].lower()
        assert not srv.sessions
    finally:
        await srv.close()
