"""Who can reach the local API: the unix socket is 0600 in a 0700 directory and refuses other
users (EACCES; and 403 from the peer-credential check even if someone loosened the modes); TCP
beyond loopback needs an explicit setting."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from coder_agent.config import load_settings
from coder_agent.devserver import DevServer
from coder_agent.errors import ConfigError

from ..conftest import t, unavailable

NOBODY = "nobody"
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv lives where nobody may not enter

_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1])
    except OSError as e:
        print("errno", e.errno); sys.exit(0)
    s.sendall(b"GET /api/v0/status HTTP/1.1\\r\\nHost: agent\\r\\nConnection: close\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    print("status", data.split(b" ", 2)[1].decode())
    print(data.decode(errors="replace").split("\\r\\n\\r\\n", 1)[-1])
""")


def _as_other_user(sock: Path) -> str:
    """Connect to ``sock`` as the unprivileged user ``nobody`` (a real other uid)."""
    if os.geteuid() != 0:
        unavailable("needs root to run a client as another user")
    pwd.getpwnam(NOBODY)
    out = subprocess.run([SYSTEM_PYTHON, "-c", _CLIENT, str(sock)], user=NOBODY, capture_output=True, text=True,
                         timeout=t(20), cwd="/", env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_socket_is_private_and_refuses_other_users(devserver: DevServer, daemon_env, spawn_daemon,  # type: ignore[no-untyped-def]
                                                       short_tmp: Path) -> None:
    sock = short_tmp / "run" / "api.sock"
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_API_ADDRESS=f"unix:{sock}"))
    await asyncio.to_thread(d.wait_ready)
    st = sock.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700

    # another user: the kernel refuses (no search permission on the directory, no write on the socket)
    out = await asyncio.to_thread(_as_other_user, sock)
    assert out.strip() == "errno 13", out

    # someone loosened the modes: the daemon itself refuses the peer (SO_PEERCRED) with a codersdk.Response
    os.chmod(short_tmp, 0o755)
    os.chmod(sock.parent, 0o755)
    os.chmod(sock, 0o666)
    out = await asyncio.to_thread(_as_other_user, sock)
    assert out.startswith("status 403"), out
    assert '"message":"Forbidden."' in out and "daemon's own user" in out

    # its own user (root here) is served
    assert d.api("GET", "/api/v0/status").status_code == 200


def test_tcp_beyond_loopback_needs_explicit_setting() -> None:
    base = {"CODER_AGENT_URL": "http://coder.example.com", "CODER_AGENT_TOKEN": "t0ken-value"}
    for addr in ("0.0.0.0:4000", "[::]:4000", "192.168.1.10:4000", "coder.example.com:4000"):
        with pytest.raises(ConfigError) as e:
            load_settings(env={**base, "CODER_AGENT_API_ADDRESS": addr})
        assert "CODER_AGENT_API_ADDRESS" in str(e.value)
        s = load_settings(env={**base, "CODER_AGENT_API_ADDRESS": addr, "CODER_AGENT_API_ALLOW_REMOTE": "true"})
        assert s.api_allow_remote and s.api_address == addr
    for addr in ("127.0.0.1:4000", "[::1]:4000", "localhost:4000"):
        assert load_settings(env={**base, "CODER_AGENT_API_ADDRESS": addr}).api_address == addr


async def test_daemon_listens_beyond_loopback_only_when_allowed(devserver: DevServer, daemon_env,  # type: ignore[no-untyped-def]
                                                               spawn_daemon) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_API_ADDRESS=f"0.0.0.0:{port}")
    refused = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "coder_agent", "run"], env=env,
                                      capture_output=True, text=True, timeout=t(30))
    assert refused.returncode == 78 and "CODER_AGENT_API_ADDRESS" in refused.stderr
    env["CODER_AGENT_API_ALLOW_REMOTE"] = "true"
    d = spawn_daemon(env)
    await asyncio.to_thread(d.wait_ready)
    # it really is bound to every address (reachable through a non-loopback form of this host)
    conns = subprocess.run(["ss", "-Htln", f"sport = :{port}"], capture_output=True, text=True, check=False).stdout
    assert f"0.0.0.0:{port}" in conns or f"*:{port}" in conns, conns
    r = httpx.get(f"http://127.0.0.1:{port}/api/v0/status", timeout=10)
    assert r.status_code == 200
