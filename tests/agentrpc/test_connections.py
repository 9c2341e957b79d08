"""SSH and web-terminal sessions reach coderd: ReportConnection CONNECT/DISCONNECT by type and
session counts in UpdateStats, from the real servers (OpenSSH's client, the RPTY test client)
through an AgentSession against the devserver.

The tunnel is played by a loopback splicer that uses the servers exactly as the tailnet will
(:mod:`coder_agent.tunnelports`): ``await port()``, ``register_peer`` before the first byte."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from coder_agent.agentrpc import AgentSession, new_session
from coder_agent.connreports import SumCounts
from coder_agent.daemon import Daemon
from coder_agent.devserver import DevServer
from coder_agent.rpty import service as rpty_service
from coder_agent.sshd import service as sshd_service

from ..conftest import CLIENT_IP, Splicer, apoll, t
from ..rpty.client import Client
from .conftest import ctl_of, rec_of

USER = getpass.getuser()


@dataclass
class Agent:
    daemon: Daemon
    session: AgentSession
    ssh: sshd_service.SshService
    pty: rpty_service.RptyService
    ssh_port: int  # the splicer's (the "tunnel port 1")
    pty_port: int  # the splicer's (the "tunnel port 2")


@pytest.fixture
async def agent(ds: DevServer, make_daemon: Callable[..., Daemon]) -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[Agent, list[asyncio.Task[None]], list[Splicer]]] = []

    async def make(before_start: Callable[[Daemon], None] = lambda d: None, **env: str) -> Agent:
        daemon = make_daemon(ds, **env)
        ssh = sshd_service.make_service(settings=daemon.settings, command_env=daemon.command_env,
                                        priority=daemon.child_priority, manifests=daemon.manifests,
                                        own_ports=daemon.own_ports, reports=daemon.connection_reports)
        pty = rpty_service.make_service(settings=daemon.settings, command_env=daemon.command_env,
                                        priority=daemon.child_priority,
                                        own_ports=daemon.own_ports, reports=daemon.connection_reports)
        before_start(daemon)
        session = new_session(daemon.agent_parts(session_counts=SumCounts(ssh, pty)), tick=0.2)
        tasks = [asyncio.create_task(ssh.run()), asyncio.create_task(pty.run())]
        await session.start()
        splicers = [Splicer(ssh, 1), Splicer(pty, 2)]
        a = Agent(daemon, session, ssh, pty, await splicers[0].start(), await splicers[1].start())
        made.append((a, tasks, splicers))
        return a

    yield make
    for a, tasks, splicers in made:
        for sp in splicers:
            sp.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(t(15)):
                await a.ssh.drain()
                await a.pty.drain()
                await a.session.shutdown()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def ssh_argv(port: int, *opts: str) -> list[str]:
    return ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", "-p", str(port), *opts, f"{USER}@127.0.0.1"]


def reports(ds: DevServer) -> list[dict[str, Any]]:
    return rec_of(ds).connection_reports


def stats_with(ds: DevServer, app: str) -> list[dict[str, Any]]:
    return [s for s in rec_of(ds).stats if s["session_counts"].get(app, 0) > 0]


async def test_ssh_sessions_reported_and_counted_by_type(ds: DevServer, agent: Callable[..., Any]) -> None:
    a: Agent = await agent()
    assert await a.ssh.port() in a.daemon.own_ports  # never a workspace listening port
    # VS Code's Remote-SSH session, held open until we say so
    p = await asyncio.create_subprocess_exec(
        *ssh_argv(a.ssh_port, "-o", "SetEnv=CODER_SSH_SESSION_TYPE=vscode"), "echo started; read x; exit 3",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert p.stdin is not None and p.stdout is not None
    try:
        assert await asyncio.wait_for(p.stdout.readline(), t(20)) == b"started\n"
        # while it is open, UpdateStats carries it: the map and the deprecated field
        open_stats = await apoll(lambda: stats_with(ds, "vscode"), 15)
        assert open_stats[-1]["session_counts"] == {"vscode": 1}
        assert open_stats[-1]["session_count_fields"] == {"ssh": 0, "vscode": 1, "jetbrains": 0,
                                                          "reconnecting_pty": 0}
        connect = await apoll(lambda: reports(ds), 10)
        assert [(r["action"], r["type"], r["app_name"], r["ip"]) for r in connect] == [
            ("CONNECT", "VSCODE", "vscode", CLIENT_IP)]
        p.stdin.write(b"go\n")
        await p.stdin.drain()
        assert await asyncio.wait_for(p.wait(), t(20)) == 3
    finally:
        if p.returncode is None:
            p.kill()
            await p.wait()
    done = await apoll(lambda: reports(ds)[1:], 10)
    assert [(r["action"], r["type"], r["ip"], r["status_code"], r["id"]) for r in done] == [
        ("DISCONNECT", "VSCODE", CLIENT_IP, 3, connect[0]["id"])]
    n_stats = len(rec_of(ds).stats)
    await apoll(lambda: len(rec_of(ds).stats) > n_stats, 10)  # a report after the session: none open
    assert rec_of(ds).stats[-1]["session_counts"] == {}

    # a plain ssh session is SSH
    q = await asyncio.create_subprocess_exec(*ssh_argv(a.ssh_port), "exit 0", stdin=asyncio.subprocess.DEVNULL,
                                             stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(q.communicate(), t(20))
    assert q.returncode == 0, err
    plain = await apoll(lambda: reports(ds)[2:] if len(reports(ds)) >= 4 else None, 10)
    assert [(r["action"], r["type"], r["app_name"], r["status_code"]) for r in plain] == [
        ("CONNECT", "SSH", "ssh", 0), ("DISCONNECT", "SSH", "ssh", 0)]
    assert plain[0]["id"] == plain[1]["id"] != connect[0]["id"]


async def test_web_terminal_reported_and_counted(ds: DevServer, agent: Callable[..., Any]) -> None:
    a: Agent = await agent()
    c = await Client.open(a.pty_port, str(uuid.uuid4()), command="sh")
    try:
        await c.send("echo wired-$((6*7))\r")
        await c.expect("wired-42")
        open_stats = await apoll(lambda: stats_with(ds, "reconnecting_pty"), 15)
        assert open_stats[-1]["session_counts"] == {"reconnecting_pty": 1}
        assert open_stats[-1]["session_count_fields"]["reconnecting_pty"] == 1
        connect = await apoll(lambda: reports(ds), 10)
        assert [(r["action"], r["type"], r["app_name"], r["ip"]) for r in connect] == [
            ("CONNECT", "RECONNECTING_PTY", "reconnecting_pty", CLIENT_IP)]
    finally:
        await c.close()
    done = await apoll(lambda: reports(ds)[1:], 10)
    assert [(r["action"], r["type"], r["ip"], r["id"]) for r in done] == [
        ("DISCONNECT", "RECONNECTING_PTY", CLIENT_IP, connect[0]["id"])]


async def test_reports_wait_for_the_rpc_in_order(ds: DevServer, agent: Callable[..., Any]) -> None:
    # events from before the first connection (the servers run while coderd is unreachable) arrive in order
    ids = [str(uuid.uuid4()) for _ in range(3)]

    def early(d: Daemon) -> None:
        d.connection_reports.connect(ids[0], "ssh", "localhost")
        d.connection_reports.connect(ids[1], "jetbrains", CLIENT_IP)
        d.connection_reports.disconnect(ids[0], "ssh", "localhost", 255, "killed")

    await agent(early)
    got = await apoll(lambda: reports(ds) if len(reports(ds)) >= 3 else None, 15)
    assert [(r["id"], r["action"], r["type"], r["ip"], r["status_code"], r["reason"]) for r in got] == [
        (ids[0], "CONNECT", "SSH", "127.0.0.1", 0, None), (ids[1], "CONNECT", "JETBRAINS", CLIENT_IP, 0, None),
        (ids[0], "DISCONNECT", "SSH", "127.0.0.1", 255, "killed")]


async def test_older_coderd_without_report_connection(ds: DevServer, agent: Callable[..., Any]) -> None:
    ctl_of(ds).unimplemented.add("ReportConnection")
    a: Agent = await agent(lambda d: d.connection_reports.connect(str(uuid.uuid4()), "ssh", CLIENT_IP))
    await apoll(lambda: a.daemon.connection_reports.disabled, 15)
    assert len(a.daemon.connection_reports) == 0  # dropped, not kept forever
    q = await asyncio.create_subprocess_exec(*ssh_argv(a.ssh_port), "exit 0", stdin=asyncio.subprocess.DEVNULL,
                                             stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(q.communicate(), t(20))
    assert q.returncode == 0, err  # SSH works all the same
    assert len(a.daemon.connection_reports) == 0 and reports(ds) == []
    n = len(rec_of(ds).stats)
    await apoll(lambda: len(rec_of(ds).stats) > n, 10)  # the session goes on (stats keep coming)


async def test_graceful_stop_reports_open_sessions_ended(ds: DevServer, make_daemon: Callable[..., Daemon]) -> None:
    # the whole daemon (compose wires the servers, the reports and tunnel_services); SIGTERM-like stop
    daemon = make_daemon(ds, CODER_AGENT_DEVCONTAINERS_ENABLE="false", CODER_AGENT_SHUTDOWN_TIMEOUT="10")
    task = asyncio.create_task(daemon.run())
    splicer: Splicer | None = None
    p: asyncio.subprocess.Process | None = None
    try:
        await apoll(lambda: daemon.tunnel_services or task.done(), 10)
        assert not task.done(), task.exception()
        assert set(daemon.tunnel_services) == {1, 2, 22} and daemon.tunnel_services[1] is daemon.tunnel_services[22]
        splicer = Splicer(daemon.tunnel_services[22], 22)
        port = await splicer.start()
        p = await asyncio.create_subprocess_exec(
            *ssh_argv(port), "echo started; exec sleep 60", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        assert p.stdout is not None
        assert await asyncio.wait_for(p.stdout.readline(), t(30)) == b"started\n"
        (connect,) = await apoll(lambda: reports(ds), 15)
        assert (connect["action"], connect["type"]) == ("CONNECT", "SSH")
        daemon.request_stop()
        await asyncio.wait_for(task, t(30))
        assert [(r["action"], r["id"]) for r in reports(ds)] == [("CONNECT", connect["id"]),
                                                                 ("DISCONNECT", connect["id"])]
        await asyncio.wait_for(p.wait(), t(10))  # the client was hung up on
    finally:
        if splicer is not None:
            splicer.close()
        if p is not None and p.returncode is None:
            p.kill()
            await p.wait()
        if not task.done():
            daemon.request_stop()
            await asyncio.wait_for(task, t(30))


async def test_without_tailnet_the_ssh_server_starts_on_first_use(ds: DevServer, agent: Callable[..., Any]) -> None:
    a: Agent = await agent(CODER_AGENT_TAILNET_ENABLE="false")
    await apoll(lambda: a.daemon.manifests.latest is not None, 15)
    await apoll(lambda: a.ssh.health.state == "ok", 5)
    await apoll(lambda: rec_of(ds).stats, 10)  # a while after the manifest: it would have started by now
    assert a.ssh.server is None and a.ssh.status()["listening"] is False  # asyncssh not even imported for it
    q = await asyncio.create_subprocess_exec(*ssh_argv(a.ssh_port), "exit 5", stdin=asyncio.subprocess.DEVNULL,
                                             stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(q.communicate(), t(30))
    assert q.returncode == 5, err  # the splice's port() started it
    assert a.ssh.status()["listening"] is True
