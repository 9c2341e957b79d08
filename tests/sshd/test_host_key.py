"""The SSH host key follows the workspace's names, as Go's (``agent.SSHKeySeed``: owner, workspace,
agent names): the same across a daemon restart, the claimed workspace's after a prebuild claim —
served at once to new connections, while a session opened before the claim goes on.

Against the devserver (its reinit hub plays coderd's claim; the claim also renames the workspace
and gives it its new owner, as coderd does) with OpenSSH's own ``ssh`` and ``ssh-keyscan``:

* the daemon in-process, its SSH service reached through a loopback splicer that registers the
  peer as the tunnel does (the tunnel itself is rebuilt by a reinit, which ends tunnelled sessions;
  the splicer is not, so a live session across the claim can be watched);
* the daemon as a real process, its loopback listener scanned (the host key is shown before
  authentication, which only the tunnel's peers pass).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from coder_agent.config import Settings
from coder_agent.daemon import Daemon
from coder_agent.devserver import DevAgent, DevServer
from coder_agent.devserver.reinit import hub, mark_prebuild
from coder_agent.sshd.policy import host_key_seed
from coder_agent.sshd.service import SshService

from ..conftest import DaemonProcess, Splicer, apoll, poll, t, unavailable

pytestmark = pytest.mark.timeout(240)

USER = getpass.getuser()
PING = 0.2
PREBUILD = ("prebuilds", "prebuilt-7f3a")  # coderd's prebuild owner and generated name
CLAIMED = ("alice", "my-workspace")  # after the claim: the claimer and the name she chose


@pytest.fixture(autouse=True)
def _openssh() -> None:
    if not all(shutil.which(tool) for tool in ("ssh", "ssh-keyscan")):
        unavailable("needs OpenSSH's client (apt-get install openssh-client)")


def expected_key(owner: str, workspace: str, agent: str = "main") -> str:
    """The public key (base64 blob) the names give."""
    from coder_agent.sshd.server import host_key

    return host_key(host_key_seed(owner, workspace, agent)).export_public_key("openssh").decode().split()[1]


def prebuild_agent() -> DevAgent:
    agent = DevAgent()
    mark_prebuild(agent)
    agent.extra.update(owner_username=PREBUILD[0], workspace_name=PREBUILD[1])
    return agent


def claim(ds: DevServer) -> None:
    """coderd's claim: the workspace gets its new owner and name, then the agent hears of it."""
    ds.agent.extra.update(owner_username=CLAIMED[0], workspace_name=CLAIMED[1])
    hub(ds).claim("owner-alice")


def known_hosts(path: Path, key: str) -> Path:
    path.write_text(f"coder.ws ssh-ed25519 {key}\n")
    return path


def ssh_argv(port: int, hosts: Path, *opts: str) -> list[str]:
    """OpenSSH as a user's ``coder config-ssh`` host would be, but checking the host key strictly."""
    return ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={hosts}",
            "-o", "HostKeyAlias=coder.ws", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-p", str(port), *opts,
            f"{USER}@127.0.0.1"]


async def ssh_run(argv: list[str], command: str) -> tuple[int, str]:
    p = await asyncio.create_subprocess_exec(*argv, command, stdin=asyncio.subprocess.DEVNULL,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), t(30))
    assert p.returncode is not None
    return p.returncode, (out + err).decode(errors="replace")


def keyscan(port: int) -> str | None:
    """The ed25519 host key the listener on ``port`` shows (None: none answered)."""
    out = subprocess.run(["ssh-keyscan", "-T", "10", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
                         capture_output=True, text=True, timeout=t(30))
    keys = [line.split()[2] for line in out.stdout.splitlines() if line and not line.startswith("#")]
    return keys[0] if keys else None


# -- in-process: a live session across the claim -------------------------------------------------


@pytest.fixture
async def claimable(short_tmp: Path) -> AsyncIterator[tuple[DevServer, Daemon]]:
    async with DevServer(agents=[prebuild_agent()]) as ds:
        hub(ds).ping_interval = PING
        d = Daemon(Settings.model_validate({
            "url": ds.url, "token": ds.agent.token, "api_address": f"unix:{short_tmp / 'api.sock'}",
            "log_dir": short_tmp / "logs", "state_dir": short_tmp / "state", "prometheus_address": "",
            "devcontainers_enable": False, "reinit_ping_interval": PING, "shutdown_timeout": 5.0}))
        task = asyncio.create_task(d.run())
        try:
            yield ds, d
        finally:
            d.request_stop()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, t(30))


async def test_claim_gives_new_connections_the_new_key_and_keeps_live_sessions(
        claimable: tuple[DevServer, Daemon], short_tmp: Path) -> None:
    ds, d = claimable
    svc = d.tunnel_services[22]
    assert isinstance(svc, SshService)
    splicer = Splicer(svc, 22)
    port = await splicer.start()
    old_hosts = known_hosts(short_tmp / "known_hosts.old", expected_key(*PREBUILD))
    new_hosts = known_hosts(short_tmp / "known_hosts.new", expected_key(*CLAIMED))
    assert expected_key(*PREBUILD) != expected_key(*CLAIMED)
    # Before the claim: the prebuild's names' key. A long session (cat), re-keying every 32 KiB.
    p = await asyncio.create_subprocess_exec(
        *ssh_argv(port, old_hosts, "-o", "RekeyLimit=32K"), "cat",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert p.stdin is not None and p.stdout is not None and p.stderr is not None
        p.stdin.write(b"before\n")
        assert await asyncio.wait_for(p.stdout.readline(), t(30)) == b"before\n"
        listener = svc.server.port if svc.server is not None else 0

        claim(ds)
        await apoll(lambda: d.session.generation == 2 and d.manifests.latest is not None
                    and d.manifests.latest.workspace_name == CLAIMED[1], timeout=30)

        # New connections: the claimed workspace's key, from the same listener (no restart).
        code, said = await ssh_run(ssh_argv(port, old_hosts), "echo stale")
        assert code == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in said, said
        code, said = await ssh_run(ssh_argv(port, new_hosts), "echo fresh")
        assert (code, said) == (0, "fresh\n")
        assert svc.server is not None and svc.server.port == listener

        # The session from before the claim goes on, re-keying with the key it was accepted with
        # (OpenSSH drops a connection whose host key changes at a re-key).
        chunk = (b"x" * 1023 + b"\n") * 200
        p.stdin.write(chunk + b"after\n")
        try:
            echoed, _ = await asyncio.wait_for(
                asyncio.gather(p.stdout.readexactly(len(chunk) + 6), p.stdin.drain()), t(60))
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            raise AssertionError(f"the session died: {(await p.stderr.read()).decode(errors='replace')}") from e
        assert echoed == chunk + b"after\n"
        p.stdin.close()
        assert await asyncio.wait_for(p.wait(), t(30)) == 0, (await p.stderr.read()).decode(errors="replace")
    finally:
        splicer.close()
        if p.returncode is None:
            p.kill()
            await p.wait()


# -- the daemon process: restarts and a claim -----------------------------------------------------


def _status(d: DaemonProcess) -> dict[str, Any]:
    data: dict[str, Any] = d.api("GET", "/api/v0/status").json()
    return data


def _ssh_port(d: DaemonProcess) -> int:
    d.wait_ready()
    st = poll(lambda: (s := _status(d)).get("sshd", {}).get("listening") and s, 30)
    return int(st["sshd"]["port"])


async def test_daemon_key_survives_restarts_and_follows_a_claim(
        daemon_env: Callable[..., dict[str, str]], spawn_daemon: Callable[..., DaemonProcess]) -> None:
    async with DevServer(agents=[prebuild_agent()], tailnet=True) as ds:
        hub(ds).ping_interval = PING
        env = daemon_env(ds.url, ds.agent.token, CODER_AGENT_REINIT_PING_INTERVAL=str(PING),
                         CODER_AGENT_SHUTDOWN_TIMEOUT="5")

        async def restart(d: DaemonProcess) -> DaemonProcess:
            d.signal(signal.SIGTERM)
            assert await asyncio.to_thread(d.wait) == 0
            return spawn_daemon(env)

        d = spawn_daemon(env)
        port = await asyncio.to_thread(_ssh_port, d)
        assert await asyncio.to_thread(keyscan, port) == expected_key(*PREBUILD)
        d = await restart(d)  # the same manifest: the same key
        port = await asyncio.to_thread(_ssh_port, d)
        assert await asyncio.to_thread(keyscan, port) == expected_key(*PREBUILD)

        claim(ds)
        await asyncio.to_thread(poll, lambda: _status(d)["session_generation"] == 2, 30)
        assert await asyncio.to_thread(poll, lambda: keyscan(port) == expected_key(*CLAIMED), 30, 0.2)
        st = await asyncio.to_thread(_status, d)
        assert st["sshd"]["port"] == port and st["services"]["sshd"]["state"] == "ok"
        assert "key" not in str(st["sshd"]).lower()

        d = await restart(d)  # the claimed workspace's manifest: its key again
        port = await asyncio.to_thread(_ssh_port, d)
        assert await asyncio.to_thread(keyscan, port) == expected_key(*CLAIMED)
        text = d.stderr()
        for secret in (expected_key(*PREBUILD), expected_key(*CLAIMED)):
            assert secret[-20:] not in text  # the key (even its public half) is never logged
