"""The SSH server against OpenSSH's own clients (ssh, sftp, scp, ssh-agent) on loopback.

The server runs in the test's event loop, so every client is an asyncio subprocess (or polled)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import getpass
import hashlib
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from coder_agent.childenv import ChildEnv
from coder_agent.sshd.policy import host_key_seed
from coder_agent.sshd.server import SshServer

from ..conftest import apoll, echo_stream, free_port, pipe, process_gone, t, unavailable

USER = getpass.getuser()
TOKEN = "tok-sshd-test-123"


@dataclass
class Recorder:
    connects: list[tuple[str, str, str]] = field(default_factory=list)
    disconnects: list[tuple[str, str, str, int, str]] = field(default_factory=list)

    def on_connect(self, id: str, type: str, ip: str) -> None:
        self.connects.append((id, type, ip))

    def on_disconnect(self, id: str, type: str, ip: str, status_code: int, reason: str) -> None:
        self.disconnects.append((id, type, ip, status_code, reason))


@dataclass
class Harness:
    server: SshServer
    port: int
    reporter: Recorder
    tmp: Path

    def argv(self, *args: str, port: int | None = None) -> list[str]:
        return ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "BatchMode=yes", "-F", "/dev/null", "-p", str(port or self.port), *args]

    async def run(self, command: str, *opts: str, **kw: Any) -> tuple[int, str, str]:
        return await self._run([*opts], command, **kw)

    async def _run(self, opts: list[str], command: str, input: bytes | None = None, timeout: float = 30,
                   env: dict[str, str] | None = None, port: int | None = None) -> tuple[int, str, str]:
        """``ssh [opts] user@127.0.0.1 command``: exit status, stdout, stderr."""
        p = await asyncio.create_subprocess_exec(
            *self.argv(*opts, port=port), f"{USER}@127.0.0.1", command,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        out, err = await asyncio.wait_for(p.communicate(input), t(timeout))
        assert p.returncode is not None
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def _start(tmp: Path, **kw: Any) -> Harness:
    if not all(shutil.which(tool) for tool in ("ssh", "sftp", "scp")):
        unavailable("needs OpenSSH's client (apt-get install openssh-client)")
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    (tmp / "motd").write_text("Welcome to the workspace\nsecond line\n")
    env = ChildEnv({"GIT_SSH_COMMAND": "/opt/agent gitssh --", "GIT_ASKPASS": "/opt/agent-askpass"}, tmp / "data",
                   agent_url="http://coder.test", token=lambda: TOKEN)
    env.set_manifest({"workspace_name": "ws", "agent_name": "main", "owner": "alice", "workspace_id": "w-1",
                      "vs_code_port_proxy_uri": "https://proxy.test/{{port}}", "motd_path": str(tmp / "motd"),
                      "directory": str(work), "environment": {"FROM_MANIFEST": "yes"}}, [])
    reporter = Recorder()
    # The daemon's own environment, as under systemd: no terminal, no agent of its own.
    # Its own HOME: this machine's ~/.profile runs `pyenv rehash`, which can wait a minute for a lock.
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    (home / ".bash_profile").write_text("PS1='$ '\n")
    penv = {k: v for k, v in os.environ.items() if k not in ("TERM", "SSH_AUTH_SOCK")} | {"HOME": str(home)}
    kw.setdefault("require_registered_peer", False)  # OpenSSH's client straight to the loopback port
    server = SshServer(env, host_key_seed=host_key_seed("alice", "ws", "main"), reporter=reporter,
                       kill_grace=t(3), process_env=penv, **kw)
    port = await server.start()
    return Harness(server, port, reporter, tmp)


@pytest.fixture
async def sshd(tmp_path: Path) -> AsyncIterator[Harness]:
    h = await _start(tmp_path)
    try:
        yield h
    finally:
        await h.server.stop()


async def _echo_round_trip(connect: Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]],
                           payload: bytes) -> bytes:
    reader, writer = await connect()
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), t(10))
    finally:
        writer.close()


async def _until_echoes(connect: Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]) -> None:
    """Poll until a round trip through the forward works (ssh sets it up asynchronously)."""
    payload = os.urandom(100_000)
    deadline = asyncio.get_running_loop().time() + t(15)
    while True:
        try:
            assert await _echo_round_trip(connect, payload) == payload
            return
        except (OSError, asyncio.IncompleteReadError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


# -- exec, environment, exit status --------------------------------------------------------------


async def test_exit_status_passes_through(sshd: Harness) -> None:
    assert (await sshd.run("exit 7"))[0] == 7
    rc, out, _ = await sshd.run("echo out; echo err >&2; exit 0")
    assert rc == 0 and out == "out\n"
    assert (await sshd.run("kill -9 $$"))[0] == 255  # a signal death, as Go reports it


async def test_stdin_and_large_output_both_ways(sshd: Harness) -> None:
    data = os.urandom(8 * 1024 * 1024)
    rc, out, _ = await sshd.run("sha256sum; head -c 8388608 /dev/zero | wc -c", input=data, timeout=60)
    assert rc == 0
    assert out.split()[0] == hashlib.sha256(data).hexdigest()  # all of stdin, then its EOF
    assert out.split()[-1] == "8388608"


async def test_environment_as_go(sshd: Harness) -> None:
    rc, out, _ = await sshd.run("env; echo CWD=$(pwd)", "-o", "SetEnv=CODER_SSH_SESSION_TYPE=ssh FOO=bar")
    assert rc == 0
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert env["CODER"] == "true"
    assert env["CODER_WORKSPACE_NAME"] == "ws" and env["CODER_WORKSPACE_AGENT_NAME"] == "main"
    assert env["CODER_WORKSPACE_OWNER_NAME"] == "alice"
    assert env["CODER_AGENT_TOKEN"] == TOKEN
    assert env["GIT_SSH_COMMAND"] == "/opt/agent gitssh --" and env["GIT_ASKPASS"] == "/opt/agent-askpass"
    assert env["VSCODE_PROXY_URI"] == "https://proxy.test/{{port}}"
    assert env["FROM_MANIFEST"] == "yes"
    assert env["USER"] == env["LOGNAME"] == USER and env["SHELL"]
    assert env["PATH"].split(":")[0] == str(sshd.tmp / "data" / "coder-script-data" / "bin")
    assert re.fullmatch(r"127\.0\.0\.1 \d+ \d+", env["SSH_CLIENT"]), env["SSH_CLIENT"]
    assert re.fullmatch(rf"127\.0\.0\.1 \d+ 127\.0\.0\.1 {sshd.port}", env["SSH_CONNECTION"])
    assert env["FOO"] == "bar"  # client-sent variables are accepted
    assert "CODER_SSH_SESSION_TYPE" not in env
    assert "TERM" not in env and "SSH_AUTH_SOCK" not in env  # no PTY, no agent asked for
    assert env["CWD"] == str(sshd.tmp / "work")  # the manifest's directory


async def test_token_withheld(tmp_path: Path) -> None:
    h = await _start(tmp_path)
    try:
        h.server.env.token_in_env = False
        _, out, _ = await h.run("env")
        assert "CODER_AGENT_TOKEN" not in out and TOKEN not in out
    finally:
        await h.server.stop()


# -- PTY, login shell, MOTD -------------------------------------------------------------------------


def _winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def _expect(fd: int, buf: bytearray, pattern: bytes, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + t(timeout)
    while pattern not in buf:
        try:
            data = os.read(fd, 65536)
            if not data:
                raise AssertionError(f"EOF before {pattern!r}: {bytes(buf)!r}")
            buf += data
        except BlockingIOError:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no {pattern!r} in {bytes(buf)!r}") from None
            await asyncio.sleep(0.05)
        except OSError as e:  # EIO: the client is gone
            raise AssertionError(f"{e} before {pattern!r}: {bytes(buf)!r}") from None


async def test_pty_login_shell_follows_window_changes(sshd: Harness) -> None:
    master, slave = os.openpty()
    _winsize(slave, 24, 80)
    attrs = termios.tcgetattr(slave)
    attrs[6][termios.VERASE] = b"\x08"  # a mode the client sends that differs from the default (^?)
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    proc = subprocess.Popen(sshd.argv("-tt", f"{USER}@127.0.0.1"), stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    os.set_blocking(master, False)
    buf = bytearray()
    try:
        await _expect(master, buf, b"Welcome to the workspace\r\nsecond line\r\n")  # the MOTD, raw terminal
        os.write(master, b"shopt -q login_shell && echo LOGIN_$((6*7)); echo TERM_$TERM\n")
        await _expect(master, buf, b"LOGIN_42")
        await _expect(master, buf, b"TERM_" + os.environ.get("TERM", "dumb").encode())
        os.write(master, b'[ "$(tty)" = "$SSH_TTY" ] && echo SAME_TTY_$((1+1))\n')
        await _expect(master, buf, b"SAME_TTY_2")
        os.write(master, b"stty -a | grep -q 'erase = ^H;' && echo ERASE_$((2*4))\n")
        await _expect(master, buf, b"ERASE_8")  # the client's terminal modes were applied
        os.write(master, b"stty size | tr ' ' x\n")
        await _expect(master, buf, b"24x80")
        _winsize(master, 40, 132)  # the kernel sends ssh SIGWINCH; ssh sends a window-change
        deadline = asyncio.get_running_loop().time() + t(15)
        while True:  # the window change travels on its own: ask again until it has arrived
            os.write(master, b"stty size | tr ' ' x\n")
            try:
                await _expect(master, buf, b"40x132", timeout=1)
                break
            except AssertionError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
        os.write(master, b"exit 5\n")
        await apoll(lambda: proc.poll() is not None, 15)
        assert proc.returncode == 5
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)


async def _login_output(h: Harness) -> str:
    p = await asyncio.create_subprocess_exec(
        *h.argv("-tt", f"{USER}@127.0.0.1"), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(p.communicate(b"exit 0\n"), t(30))
    return out.decode(errors="replace")


async def test_motd_only_on_login_shells_without_hushlogin(sshd: Harness) -> None:
    assert "Welcome to the workspace" in await _login_output(sshd)
    assert "Welcome" not in (await sshd.run("true", "-tt"))[1]  # a command, even with a PTY: quiet
    (sshd.tmp / "home" / ".hushlogin").touch()
    assert "Welcome" not in await _login_output(sshd)


# -- file transfer ---------------------------------------------------------------------------------


async def _tool(*argv: str, timeout: float = 60) -> tuple[int, str]:
    p = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(p.communicate(), t(timeout))
    assert p.returncode is not None
    return p.returncode, out.decode(errors="replace")


def _opts(port: int) -> list[str]:
    return ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", "-F", "/dev/null", "-P", str(port)]


async def test_sftp_put_get_10mb_from_home(sshd: Harness) -> None:
    src = sshd.tmp / "src.bin"
    src.write_bytes(os.urandom(10 * 1024 * 1024))
    up, down = sshd.tmp / "uploaded.bin", sshd.tmp / "downloaded.bin"
    batch = sshd.tmp / "batch"
    batch.write_text(f"pwd\nput {src} {up}\nget {up} {down}\n")
    rc, out = await _tool("sftp", *_opts(sshd.port), "-b", str(batch), f"{USER}@127.0.0.1")
    assert rc == 0, out
    assert f"Remote working directory: {sshd.tmp / 'home'}" in out
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert hashlib.sha256(up.read_bytes()).hexdigest() == digest
    assert hashlib.sha256(down.read_bytes()).hexdigest() == digest


async def test_scp_both_protocols(sshd: Harness) -> None:
    src = sshd.tmp / "a.txt"
    src.write_text("scp payload\n")
    for flag, name in (([], "b.txt"), (["-O"], "c.txt")):  # SFTP-based (default) and the legacy scp protocol
        rc, out = await _tool("scp", *flag, *_opts(sshd.port), str(src), f"{USER}@127.0.0.1:{sshd.tmp / name}")
        assert rc == 0, out
        assert (sshd.tmp / name).read_text() == "scp payload\n"


async def test_block_file_transfer(tmp_path: Path) -> None:
    h = await _start(tmp_path, block_file_transfer=True)
    try:
        src = tmp_path / "a.txt"
        src.write_text("x")
        for flag in ([], ["-O"]):
            rc, out = await _tool("scp", *flag, *_opts(h.port), str(src), f"{USER}@127.0.0.1:{tmp_path / 'b.txt'}")
            assert rc != 0, out
        assert "File transfer has been disabled." in out  # legacy scp shows the server's message
        assert not (tmp_path / "b.txt").exists()
        batch = tmp_path / "batch"
        batch.write_text("pwd\n")
        rc, out = await _tool("sftp", *_opts(h.port), "-b", str(batch), f"{USER}@127.0.0.1")
        assert rc != 0 and "Remote working directory" not in out
        rc, stdout, _ = await h.run("/usr/bin/rsync --server --sender . /etc")
        assert rc == 65 and stdout == "\x02File transfer has been disabled.\n"
        assert (await h.run("echo still-a-shell"))[1] == "still-a-shell\n"
        assert any(d[3] == 65 and d[4] == "file transfer blocked" for d in h.reporter.disconnects)
    finally:
        await h.server.stop()


# -- forwarding ----------------------------------------------------------------------------------------


async def test_local_and_remote_forwards_tcp_and_unix(sshd: Harness) -> None:
    echo = await asyncio.start_server(echo_stream, "127.0.0.1", 0)
    eport = echo.sockets[0].getsockname()[1]
    usock = sshd.tmp / "echo.sock"
    uecho = await asyncio.start_unix_server(echo_stream, str(usock))
    lport, lport_unix, rport = free_port(), free_port(), free_port()
    rsock = sshd.tmp / "remote.sock"
    p = await asyncio.create_subprocess_exec(
        *sshd.argv("-N", "-o", "ExitOnForwardFailure=yes",
                   "-L", f"127.0.0.1:{lport}:127.0.0.1:{eport}",  # direct-tcpip
                   "-L", f"127.0.0.1:{lport_unix}:{usock}",  # direct-streamlocal@openssh.com
                   "-R", f"{rport}:127.0.0.1:{eport}",  # tcpip-forward
                   "-R", f"{rsock}:127.0.0.1:{eport}",  # streamlocal-forward@openssh.com
                   f"{USER}@127.0.0.1"),
        stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        await _until_echoes(lambda: asyncio.open_connection("127.0.0.1", lport))
        await _until_echoes(lambda: asyncio.open_connection("127.0.0.1", lport_unix))
        await _until_echoes(lambda: asyncio.open_connection("127.0.0.1", rport))
        await _until_echoes(lambda: asyncio.open_unix_connection(str(rsock)))
    finally:
        p.terminate()
        await p.wait()
        echo.close()
        uecho.close()
    # the remote listener goes with the connection
    await apoll(lambda: _refused(rport), 10)


async def test_remote_forwards_cancelled(sshd: Harness) -> None:
    echo = await asyncio.start_server(echo_stream, "127.0.0.1", 0)
    eport = echo.sockets[0].getsockname()[1]
    ctl, rport, rsock = sshd.tmp / "ctl", free_port(), sshd.tmp / "r2.sock"
    master = await asyncio.create_subprocess_exec(*sshd.argv("-M", "-N", "-S", str(ctl), f"{USER}@127.0.0.1"),
                                                  stdin=asyncio.subprocess.DEVNULL)
    try:
        await apoll(ctl.exists, 15)
        for op in ("forward", "cancel"):
            for spec in (f"{rport}:127.0.0.1:{eport}", f"{rsock}:127.0.0.1:{eport}"):
                rc, out = await _tool("ssh", "-F", "/dev/null", "-S", str(ctl), "-O", op, "-R", spec,
                                      f"{USER}@127.0.0.1")
                assert rc == 0, out
            if op == "forward":
                await _until_echoes(lambda: asyncio.open_connection("127.0.0.1", rport))
                await _until_echoes(lambda: asyncio.open_unix_connection(str(rsock)))
        await apoll(lambda: _refused(rport), 10)  # cancel-tcpip-forward closed the listener
        await apoll(lambda: _unix_refused(rsock), 10)  # and cancel-streamlocal-forward@openssh.com
    finally:
        master.terminate()
        await master.wait()
        echo.close()


def _unix_refused(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return True
    return False


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


# -- agent forwarding --------------------------------------------------------------------------------


async def test_agent_forwarding(sshd: Harness) -> None:
    if shutil.which("ssh-agent") is None:
        unavailable("needs ssh-agent")
    sock = sshd.tmp / "agent.sock"
    key = sshd.tmp / "id_test"
    assert (await _tool("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sshd-test-key", "-f", str(key)))[0] == 0
    agent = await asyncio.create_subprocess_exec("ssh-agent", "-D", "-a", str(sock), stdout=asyncio.subprocess.DEVNULL)
    try:
        await apoll(sock.exists, 10)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        p = await asyncio.create_subprocess_exec("ssh-add", str(key), env=env, stderr=asyncio.subprocess.DEVNULL)
        assert await p.wait() == 0
        rc, out, err = await sshd.run("echo SOCK=$SSH_AUTH_SOCK; ssh-add -l", "-A", env=env)
        assert rc == 0, err
        assert "sshd-test-key" in out and "SOCK=/" in out
        rc, out, _ = await sshd.run("echo SOCK=$SSH_AUTH_SOCK", "-a", env=env)
        assert "SOCK=\n" in out  # not asked for: not exported
    finally:
        agent.terminate()
        await agent.wait()


# -- hang-up on disconnect -----------------------------------------------------------------------------


async def test_background_child_signalled_on_disconnect(sshd: Harness) -> None:
    p = await asyncio.create_subprocess_exec(
        *sshd.argv(f"{USER}@127.0.0.1", "sleep 300 & echo $!; wait"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert p.stdout is not None
    pid = int(await asyncio.wait_for(p.stdout.readline(), t(15)))
    assert not process_gone(pid)
    p.kill()  # the client vanishes: the connection drops without a goodbye
    await p.wait()
    await apoll(lambda: process_gone(pid), 15)
    await apoll(lambda: sshd.reporter.disconnects, 10)
    assert sshd.reporter.disconnects[-1][4] == "connection closed"


# -- reporting -----------------------------------------------------------------------------------------


async def test_reports_and_counts_by_session_type(sshd: Harness) -> None:
    sshd.server.require_registered_peer = True  # as in the daemon: only what the tunnel registered
    # Through a splice, as the tunnel does: the server learns the tunnel peer from register_peer.
    async def splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", sshd.port)
        sshd.server.register_peer(up_w.get_extra_info("sockname")[1], ("fd7a:115c:a1e0::7", 40000),
                                  ("fd7a:115c:a1e0::1", 1))

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    relay = await asyncio.start_server(splice, "127.0.0.1", 0)
    rport = relay.sockets[0].getsockname()[1]
    p = await asyncio.create_subprocess_exec(
        *sshd.argv("-o", "SetEnv=CODER_SSH_SESSION_TYPE=vscode", f"{USER}@127.0.0.1",
                   'echo "$SSH_CONNECTION"; read x; exit 3', port=rport),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert p.stdin is not None and p.stdout is not None
    try:
        line = await asyncio.wait_for(p.stdout.readline(), t(15))
        assert line == b"fd7a:115c:a1e0::7 40000 fd7a:115c:a1e0::1 1\n"
        assert sshd.server.session_counts() == {"ssh": 0, "vscode": 1, "jetbrains": 0}
        (sid, kind, ip), = sshd.reporter.connects
        assert (kind, ip) == ("vscode", "fd7a:115c:a1e0::7")
        p.stdin.write(b"go\n")
        await p.stdin.drain()
        assert await asyncio.wait_for(p.wait(), t(15)) == 3
        await apoll(lambda: sshd.reporter.disconnects, 10)
        assert sshd.reporter.disconnects == [(sid, "vscode", "fd7a:115c:a1e0::7", 3, "")]
        assert sshd.server.session_counts() == {"ssh": 0, "vscode": 0, "jetbrains": 0}
        rc, _, err = await sshd.run("true")  # straight to the loopback port: not the tunnel, refused
        assert rc == 255 and "Permission denied" in err
        sshd.server.require_registered_peer = False
        assert (await sshd.run("true"))[0] == 0
        await apoll(lambda: len(sshd.reporter.disconnects) == 2, 10)
        assert [c[1:] for c in sshd.reporter.connects[1:]] == [("ssh", "127.0.0.1")]
    finally:
        if p.returncode is None:
            p.kill()
            await p.wait()
        relay.close()


async def test_detached_server_outlives_its_exec_session(sshd: Harness) -> None:
    # How VS Code starts its server over SSH: a session that ended by itself signals nothing.
    rc, out, _ = await sshd.run("nohup sleep 300 >/dev/null 2>&1 & echo $!")
    assert rc == 0
    pid = int(out)
    try:
        await apoll(lambda: sshd.reporter.disconnects, 10)
        await asyncio.sleep(t(1))  # a grace's worth of time: nothing may come (this one can only fail)
        assert not process_gone(pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


async def test_stop_hangs_up_running_sessions(sshd: Harness) -> None:
    p = await asyncio.create_subprocess_exec(
        *sshd.argv(f"{USER}@127.0.0.1", "trap '' HUP; echo $$; exec sleep 300"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert p.stdout is not None
    pid = int(await asyncio.wait_for(p.stdout.readline(), t(15)))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 0)
    await sshd.server.stop()  # SIGHUP is ignored by the command: SIGKILL after the grace
    assert process_gone(pid)
    await asyncio.wait_for(p.wait(), t(15))


async def test_jetbrains_counted_through_its_forwarded_channel(sshd: Harness) -> None:
    # A stand-in IDE backend: any process listening with JetBrains' marker in its command line.
    port = free_port()
    backend = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ECHO_SERVER, str(port), "-Didea.vendor.name=JetBrains",
        stdout=asyncio.subprocess.PIPE)
    assert backend.stdout is not None
    assert await asyncio.wait_for(backend.stdout.readline(), t(15)) == b"ready\n"
    lport = free_port()
    p = await asyncio.create_subprocess_exec(
        *sshd.argv("-N", "-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{lport}:127.0.0.1:{port}",
                   f"{USER}@127.0.0.1"), stdin=asyncio.subprocess.DEVNULL)
    try:
        await _until_echoes(lambda: asyncio.open_connection("127.0.0.1", lport))  # each try opens and closes one
        await apoll(lambda: any(c[1] == "jetbrains" for c in sshd.reporter.connects), 10)
        reader, writer = await asyncio.open_connection("127.0.0.1", lport)
        writer.write(b"x")
        assert await asyncio.wait_for(reader.readexactly(1), t(10)) == b"x"
        assert sshd.server.session_counts()["jetbrains"] == 1
        writer.close()
        await apoll(lambda: sshd.server.session_counts()["jetbrains"] == 0, 10)
        assert all(d[1:] == ("jetbrains", "127.0.0.1", 0, "normal close") for d in sshd.reporter.disconnects)
        assert len(sshd.reporter.disconnects) == len(sshd.reporter.connects)
    finally:
        p.terminate()
        await p.wait()
        backend.kill()
        await backend.wait()


ECHO_SERVER = """
import socket, sys, threading
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("ready", flush=True)
def serve(c):
    while d := c.recv(65536):
        c.sendall(d)
    c.close()
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""


def test_max_timeout_as_go() -> None:
    from coder_agent.sshd.server import _keepalive

    assert _keepalive(0) == {"keepalive_interval": 0}
    assert _keepalive(9) == {"keepalive_interval": 3, "keepalive_count_max": 3}  # ≥ 3 s: keepalive
    assert _keepalive(2) == {"keepalive_interval": 2, "keepalive_count_max": 1}
