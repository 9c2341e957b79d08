"""OpenSSH's own clients (ssh, sftp, scp, ssh-agent) THROUGH the tunnel to the REAL daemon.

Every client runs on the kernel's TCP in wireguard-go's namespace (rig.py), against tunnel port 1
(or 22): a terminal that follows window changes, sftp and scp (and both refused under
``--block-file-transfer``), ``-L`` and ``-R`` forwards, agent forwarding, and the hang-up of a
session's background child when its client vanishes. The client-side code that must run in the
namespace is ssh_client_helper.py. The same features on loopback, without the tunnel: tests/sshd/.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coder_agent.devserver import DevAgent, DevServer
from coder_agent.devserver.rpc import record

from ..conftest import apoll, echo_stream, free_port, process_gone, t, unavailable
from .rig import Tunnelled

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

HELPER = Path(__file__).with_name("ssh_client_helper.py")
OPTS = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20"]
BLOCKED = "File transfer has been disabled."


@contextlib.asynccontextmanager
async def _tunnelled(daemon_env: Any, spawn_daemon: Any, tmp: Path, *args: str) -> AsyncIterator[Tunnelled]:
    if not all(shutil.which(tool) for tool in ("ssh", "sftp", "scp", "ssh-agent", "ssh-add", "ssh-keygen")):
        unavailable("needs OpenSSH's client tools (apt-get install openssh-client)")
    agent = DevAgent(id=str(uuid.uuid4()))
    home = tmp / "home"  # the sessions' bash reads this ~/.bashrc (none), not the machine's
    home.mkdir()
    async with DevServer(agents=[agent], tailnet=True) as ds:
        env = daemon_env(ds.url, ds.agent.token, HOME=str(home))
        env.pop("SSH_AUTH_SOCK", None)  # as under systemd: the daemon has no agent of its own
        d = spawn_daemon(env, *args)
        d.wait_ready()
        async with Tunnelled(ds, d, tmp) as rig:
            yield rig


@pytest.fixture
async def tunnelled(daemon_env: Any, spawn_daemon: Any, short_tmp: Path) -> AsyncIterator[Tunnelled]:
    async with _tunnelled(daemon_env, spawn_daemon, short_tmp) as rig:
        yield rig


def _target(rig: Tunnelled) -> str:
    return f"coder@{rig.agent_ip}"


def _remote(rig: Tunnelled, path: Path) -> str:
    """scp's ``user@[host]:path`` (the agent's address is IPv6)."""
    return f"coder@[{rig.agent_ip}]:{path}"


async def _ssh(rig: Tunnelled, *args: str, port: int = 1, env: dict[str, str] | None = None,
               timeout: float = 60) -> Any:
    prefix = ["env", *(f"{k}={v}" for k, v in (env or {}).items())]
    return await rig.wg.ans(*prefix, "ssh", *OPTS, "-p", str(port), *args, timeout=timeout)


async def _ns_spawn(rig: Tunnelled, *argv: str, **kw: Any) -> asyncio.subprocess.Process:
    """A long-running process in the namespace (``ip netns exec`` execs it: its pid is ours)."""
    return await asyncio.create_subprocess_exec("ip", "netns", "exec", rig.wg.netns, *argv,
                                                stdin=asyncio.subprocess.DEVNULL, **kw)


async def _stop(p: asyncio.subprocess.Process) -> None:
    if p.returncode is None:
        p.kill()
    await p.wait()


# -- sessions: terminal, forwards, agent, hang-up ------------------------------------------------------


async def test_terminal_forwards_agent_and_hangup_through_the_tunnel(tunnelled: Tunnelled) -> None:
    rig = tunnelled

    # `ssh -tt` with no command: a login shell on a PTY whose size follows the client's terminal.
    got = await rig.ns_script(HELPER, "pty", t(20), "ssh", *OPTS, "-tt", "-p", "1", _target(rig), timeout=120)
    assert got["login_shell"] and got["ssh_tty"], got["output"]
    assert got["before"], got["output"]
    assert got["after"], got["output"]  # the window change arrived through the tunnel
    assert got["exit"] == 5, got["output"]

    # -L: a listener in the namespace reaching an echo server on the daemon's side...
    echo = await asyncio.start_server(echo_stream, "127.0.0.1", 0)
    eport = echo.sockets[0].getsockname()[1]
    lport, nsport, rport = 15001, 15002, free_port()  # the namespace is fresh: its ports are free
    ns_echo = await _ns_spawn(rig, sys.executable, str(HELPER), "echo", str(nsport), stdout=asyncio.subprocess.PIPE)
    fwd_log = rig.tmp / "ssh-L.log"
    with fwd_log.open("wb") as log:
        fwd = await _ns_spawn(rig, "ssh", *OPTS, "-N", "-o", "ExitOnForwardFailure=yes", "-p", "1",
                              "-L", f"127.0.0.1:{lport}:127.0.0.1:{eport}", _target(rig), stderr=log)
    try:
        got = await rig.ns_script(HELPER, "check", "127.0.0.1", lport, t(30), timeout=90)
        assert got["ok"], (got, fwd_log.read_text(errors="replace"))
        # ...and -R: a listener on the daemon's side, used by the session's own command, reaching
        # an echo server in the namespace.
        assert ns_echo.stdout is not None
        assert await asyncio.wait_for(ns_echo.stdout.readline(), t(15)) == b"ready\n"
        r = await _ssh(rig, "-o", "ExitOnForwardFailure=yes", "-R", f"127.0.0.1:{rport}:127.0.0.1:{nsport}",
                       _target(rig), f"{sys.executable} {HELPER} check 127.0.0.1 {rport} {t(30)}", timeout=90)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert '"ok": true' in r.stdout
    finally:
        await _stop(fwd)
        await _stop(ns_echo)
        echo.close()

    # -A: the client's agent (in the namespace) answers `ssh-add -l` run in the session.
    key, sock = rig.tmp / "id_test", rig.tmp / "agent.sock"
    r = await rig.wg.ans("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tunnel-agent-key", "-f", str(key))
    assert r.returncode == 0, r.stderr
    agent = await _ns_spawn(rig, "ssh-agent", "-D", "-a", str(sock), stdout=asyncio.subprocess.DEVNULL)
    try:
        await apoll(sock.exists, 10)
        r = await rig.wg.ans("env", f"SSH_AUTH_SOCK={sock}", "ssh-add", str(key))
        assert r.returncode == 0, r.stderr
        r = await _ssh(rig, "-A", _target(rig), "echo SOCK=$SSH_AUTH_SOCK; ssh-add -l",
                       env={"SSH_AUTH_SOCK": str(sock)})
        assert r.returncode == 0, r.stderr
        assert "tunnel-agent-key" in r.stdout
        socks = [line[5:] for line in r.stdout.splitlines() if line.startswith("SOCK=")]
        assert socks and socks[0].startswith("/") and socks[0] != str(sock)  # the session's own socket
        r = await _ssh(rig, "-a", _target(rig), "echo SOCK=$SSH_AUTH_SOCK", port=22, env={"SSH_AUTH_SOCK": str(sock)})
        assert r.returncode == 0 and "SOCK=\n" in r.stdout  # not asked for: none
    finally:
        await _stop(agent)

    # A session's background child is signalled when its client vanishes without a goodbye.
    pidfile = rig.tmp / "sleep.pid"
    client = await _ns_spawn(rig, "ssh", *OPTS, "-p", "1", _target(rig), f"sleep 1000 & echo $! > {pidfile}; wait",
                             stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    pid = 0
    try:
        await apoll(lambda: pidfile.exists() and pidfile.read_text().strip(), 30)
        pid = int(pidfile.read_text())
        assert not process_gone(pid)
        await _stop(client)  # SIGKILL: the kernel in the namespace closes the tunnelled TCP connection
        await apoll(lambda: process_gone(pid), 30)
    finally:
        await _stop(client)
        if pid and not process_gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)

    rec = record(rig.ds.agent)
    await apoll(lambda: any(c["action"] == "DISCONNECT" and c["reason"] == "connection closed"
                            for c in rec.connection_reports), 30)
    assert all(c["ip"] == rig.client_ip for c in rec.connection_reports)


# -- file transfer, allowed and blocked ----------------------------------------------------------------


@pytest.mark.parametrize("blocked", [False, True], ids=["allowed", "blocked"])
async def test_sftp_and_scp_through_the_tunnel(daemon_env: Any, spawn_daemon: Any, short_tmp: Path,
                                               blocked: bool) -> None:
    flags = ["--block-file-transfer"] if blocked else []
    async with _tunnelled(daemon_env, spawn_daemon, short_tmp, *flags) as rig:
        src = rig.tmp / "src.bin"
        src.write_bytes(os.urandom(10 * 1024 * 1024))
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        up, down = rig.tmp / "uploaded.bin", rig.tmp / "downloaded.bin"
        batch = rig.tmp / "batch"
        batch.write_text(f"pwd\nput {src} {up}\nget {up} {down}\n")
        r = await rig.wg.ans("sftp", *OPTS, "-P", "1", "-b", str(batch), f"coder@[{rig.agent_ip}]", timeout=180)
        out = r.stdout + r.stderr
        if not blocked:
            assert r.returncode == 0, out
            assert f"Remote working directory: {rig.tmp / 'home'}" in out
            assert hashlib.sha256(up.read_bytes()).hexdigest() == digest  # written by the daemon
            assert hashlib.sha256(down.read_bytes()).hexdigest() == digest  # read back through the tunnel
        else:
            assert r.returncode != 0 and "Remote working directory" not in out, out
            assert not up.exists() and not down.exists()

        small = rig.tmp / "a.txt"
        small.write_text("scp payload\n")
        for flag, name in (([], "b.txt"), (["-O"], "c.txt")):  # SFTP-based (default) and legacy scp
            r = await rig.wg.ans("scp", *flag, *OPTS, "-P", "1", str(small), _remote(rig, rig.tmp / name),
                                 timeout=60)
            if not blocked:
                assert r.returncode == 0, r.stderr
                assert (rig.tmp / name).read_text() == "scp payload\n"
            else:
                assert r.returncode != 0, r.stderr
                assert not (rig.tmp / name).exists()
                if flag:
                    assert BLOCKED in r.stderr  # legacy scp shows the server's message
        if not blocked:  # and back: scp from the daemon's side into the namespace's view
            r = await rig.wg.ans("scp", *OPTS, "-P", "1", _remote(rig, rig.tmp / "b.txt"), str(rig.tmp / "d.txt"))
            assert r.returncode == 0, r.stderr
            assert (rig.tmp / "d.txt").read_text() == "scp payload\n"
        else:  # a shell still works: only file transfer is refused
            r = await _ssh(rig, _target(rig), "echo still-a-shell")
            assert r.returncode == 0 and r.stdout == "still-a-shell\n", r.stderr
            rec = record(rig.ds.agent)
            await apoll(lambda: any(c["action"] == "DISCONNECT" and c["status_code"] == 65
                                    and c["reason"] == "file transfer blocked" for c in rec.connection_reports), 30)
