"""The reconnecting-PTY server with real PTYs, real processes and a client over loopback TCP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coder_agent.childenv import ChildEnv
from coder_agent.rpty import RptyServer, RptySettings
from coder_agent.rpty.server import host_of

from ..conftest import apoll, t
from .client import Client


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.events: list[tuple[Any, ...]] = []
        self.servers: list[RptyServer] = []

    async def server(self, **settings: Any) -> tuple[RptyServer, int]:
        env = ChildEnv(agent_env={"CODER_AGENT_API_ADDRESS": "x"}, data_base=self.tmp)
        srv = RptyServer(env, directory=str(self.tmp), settings=RptySettings(**settings),
                         on_connect=lambda cid, ip: self.events.append(("connect", cid, ip)),
                         on_disconnect=lambda cid, ip, code, why: self.events.append(("disconnect", cid, ip, code,
                                                                                      why)))
        self.servers.append(srv)
        return srv, await srv.start()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path)
    yield h
    for s in h.servers:
        await s.close()


def sid() -> str:
    return str(uuid.uuid4())


async def test_command_output_arrives_and_exit_closes_the_connection(harness: Harness) -> None:
    srv, port = await harness.server()
    c = await Client.open(port, sid(), "echo hello-$((6*7)); exit 3")
    out = await c.closed()
    assert b"hello-42" in out
    await apoll(lambda: srv.connections == 0 and not srv.sessions)
    kinds = [e[0] for e in harness.events]
    assert kinds == ["connect", "disconnect"]
    assert harness.events[0][2] == "127.0.0.1"
    assert harness.events[1][1] == harness.events[0][1] and harness.events[1][3:] == (0, "")


async def test_environment_and_directory(harness: Harness) -> None:
    _, port = await harness.server()
    c = await Client.open(port, sid(), 'echo "T=$TERM C=$CODER A=$CODER_AGENT_API_ADDRESS"; pwd')
    out = await c.closed()
    assert b"T=xterm-256color C=true A=x" in out
    assert str(harness.tmp).encode() in out


async def test_reconnect_replays_earlier_output_then_streams(harness: Harness) -> None:
    srv, port = await harness.server()
    key = sid()
    c1 = await Client.open(port, key, "echo first-$((1+1)); exec cat")
    await c1.expect("first-2")
    await c1.close()
    await apoll(lambda: srv.connections == 0)
    assert key in srv.sessions  # the idle timeout (5 min) keeps it
    c2 = await Client.open(port, key)
    await c2.expect("first-2")  # replayed: the process printed it once, before c2 existed
    await c2.send("ping-pong\r")
    await c2.expect("ping-pong\r\n(?s:.*)ping-pong")  # the terminal echo, then cat's copy
    await c2.close()


async def test_resize_is_applied(harness: Harness) -> None:
    _, port = await harness.server()
    c = await Client.open(port, sid(), "sh", height=24, width=80)
    await c.send("stty size; echo E$((1+1))\r")
    await c.expect(r"24 80\r\nE2")
    await c.send(height=33, width=101)
    await c.send("stty size; echo E$((2+1))\r")
    await c.expect(r"33 101\r\nE3")
    await c.send("", height=40, width=0)  # only one size: no resize
    await c.send("stty size; echo E$((3+1))\r")
    await c.expect(r"33 101\r\nE4")
    await c.close()


async def test_two_clients_both_get_output_and_either_can_type(harness: Harness) -> None:
    srv, port = await harness.server()
    key = sid()
    a = await Client.open(port, key, "exec cat")
    await a.send("one\r")
    await a.expect("one\r\n(?s:.*)one")
    b = await Client.open(port, key)
    await b.expect("one")  # replay
    assert srv.connections == 2 and len(srv.sessions) == 1
    await b.send("two\r")
    await a.expect("two\r\n(?s:.*)two")
    await b.expect("two\r\n(?s:.*)two")
    await a.send("three\r")
    await b.expect("three\r\n(?s:.*)three")
    await a.close()
    await b.close()


async def test_concurrent_first_connections_create_one_session(harness: Harness) -> None:
    srv, port = await harness.server()
    key = sid()
    a, b = await asyncio.gather(*(Client.open(port, key, "echo pid=$$; exec cat") for _ in range(2)))
    ma, mb = await a.expect(r"pid=(\d+)"), await b.expect(r"pid=(\d+)")
    assert ma.group(1) == mb.group(1)
    assert len(srv.sessions) == 1
    await a.close()
    await b.close()


async def test_idle_session_is_gone_after_its_timeout_with_its_process(harness: Harness) -> None:
    srv, port = await harness.server(idle_timeout=0.5)
    key = sid()
    c = await Client.open(port, key, "echo pid=$$; exec sleep 1000")
    pid = int((await c.expect(r"pid=(\d+)")).group(1))
    assert alive(pid)
    await c.close()
    await apoll(lambda: key not in srv.sessions and not alive(pid), timeout=15)
    # Same ID again: a new session, a new process, nothing replayed.
    c2 = await Client.open(port, key, "echo pid=$$; exec sleep 1000")
    pid2 = int((await c2.expect(r"pid=(\d+)")).group(1))
    assert pid2 != pid and f"pid={pid}".encode() not in c2.out
    await c2.close()


async def test_attached_session_outlives_the_idle_timeout(harness: Harness) -> None:
    srv, port = await harness.server(idle_timeout=0.3)
    key = sid()
    c = await Client.open(port, key, "exec cat")
    await c.send("a\r")
    await c.expect("a\r\n(?s:.*)a")
    # Well past the idle timeout, the attached session still answers.
    await asyncio.sleep(1.0)
    await c.send("b\r")
    await c.expect("b\r\n(?s:.*)b")
    assert key in srv.sessions
    await c.close()


async def test_background_child_does_not_hold_the_session_and_is_killed(harness: Harness) -> None:
    srv, port = await harness.server(exit_drain=0.5)
    c = await Client.open(port, sid(), "sleep 1000 & echo bg=$!; sleep 0.2")
    out = await c.closed(timeout=15)
    bg = int(out.split(b"bg=")[1].split()[0])
    await apoll(lambda: not alive(bg) and not srv.sessions, timeout=15)


async def test_server_close_ends_sessions_and_reports_shutdown(harness: Harness) -> None:
    srv, port = await harness.server()
    c = await Client.open(port, sid(), "echo pid=$$; exec sleep 1000")
    pid = int((await c.expect(r"pid=(\d+)")).group(1))
    silent = Client(*await asyncio.open_connection("127.0.0.1", port))  # no header yet
    await apoll(lambda: srv.connections == 2)
    await srv.close()
    await c.closed()
    assert await silent.closed() == b""
    assert not alive(pid)
    ends = [e[3:] for e in harness.events if e[0] == "disconnect"]
    assert ends == [(1, "server shut down")] * 2
    assert srv.connections == 0


@pytest.mark.parametrize("wire", [b"\x05\x00nope!", b"\x02\x00[]", b"\x01"])
async def test_bad_header_closes_the_connection(harness: Harness, wire: bytes) -> None:
    srv, port = await harness.server()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(wire)
    await w.drain()
    if wire == b"\x01":
        w.write_eof()
    c = Client(r, w)
    assert await c.closed() == b""
    await apoll(lambda: srv.connections == 0)
    assert harness.events[-1][3:] == (0, "")
    assert not srv.sessions


async def test_bad_input_ends_the_connection_not_the_session(harness: Harness) -> None:
    srv, port = await harness.server()
    key = sid()
    c = await Client.open(port, key, "exec cat")
    c.writer.write(b'{"data": 5}')
    await c.closed()
    await apoll(lambda: srv.connections == 0)
    assert key in srv.sessions


async def test_command_that_cannot_start_reports_an_error(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    srv, port = await harness.server()
    srv.directory_factory = lambda: "/nonexistent-dir"  # falls back to $HOME: still starts
    monkeypatch.setenv("SHELL", "/nonexistent/shell")
    import coder_agent.rpty.session as mod

    def no_shell(env: Any) -> Any:
        from coder_agent.childenv import LoginUser

        return LoginUser("u", "/", "/nonexistent/shell")

    monkeypatch.setattr(mod, "login_user", no_shell)
    c = await Client.open(port, sid(), "true")
    await c.closed()
    await apoll(lambda: srv.connections == 0)
    code, reason = harness.events[-1][3:]
    assert code == 1 and "nonexistent" in reason
    assert not srv.sessions


def test_host_of() -> None:
    assert host_of("1.2.3.4:5") == "1.2.3.4"
    assert host_of("[fd7a:115c::1]:80") == "fd7a:115c::1"
    assert host_of("fd7a:115c::1") == "fd7a:115c::1"
    assert host_of("10.0.0.1") == "10.0.0.1"



async def test_replay_is_the_last_64k_exactly(harness: Harness) -> None:
    srv, port = await harness.server()
    key = sid()
    a = await Client.open(port, key, "seq 1 60000; echo END-$((1+1)); exec cat")
    await a.expect("END-2", timeout=30)
    await a.close()
    await apoll(lambda: srv.connections == 0)
    b = await Client.open(port, key)
    await b.expect("END-2\r\n")
    await b.send("more\r")
    m = await b.expect("more\r\n")
    replay = bytes(b.out[:m.start()])
    assert len(replay) == 64 * 1024
    assert bytes(a.out).endswith(replay)
    await b.close()


async def test_a_client_that_does_not_read_is_dropped_not_the_session(harness: Harness) -> None:
    srv, port = await harness.server(high_water=4096, stall_timeout=1.0)
    key = sid()
    # 40 MB of output on demand: more than the loopback socket buffers of a client that stopped reading.
    reader = await Client.open(port, key,
                               "read go; head -c 40000000 /dev/zero | tr '\\0' x; echo FLOOD-$((1+1)); exec cat")
    stuck = await Client.open(port, key)
    await apoll(lambda: srv.connections == 2)
    stuck.writer.transport.pause_reading()  # type: ignore[attr-defined]
    await reader.send("go\r")
    # Keep reading (and discarding) the whole flood: it must all arrive, and the stuck one be dropped.
    deadline = asyncio.get_running_loop().time() + t(60)
    tail = b""
    while b"FLOOD-2" not in tail or srv.connections != 1:
        assert asyncio.get_running_loop().time() < deadline, f"connections={srv.connections} tail={tail!r}"
        with contextlib.suppress(TimeoutError):
            data = await asyncio.wait_for(reader.reader.read(1 << 20), 0.5)
            assert data, "the reading client was closed"
            tail = (tail + data)[-64:]
    assert key in srv.sessions
    reader.out.clear()
    await reader.send("alive-check\r")
    await reader.expect("alive-check\r\n(?s:.*)alive-check", timeout=60)
    await reader.close()
    await stuck.close()


# -- behind the tunnel: only registered loopback connections ---------------------------------------


async def test_registered_peers_only(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    import coder_agent.rpty.server as server_mod

    monkeypatch.setattr(server_mod, "REGISTER_WAIT", 1.0)
    srv, port = await harness.server()
    srv.require_registered_peer = True
    # the tunnel registers right after its loopback connect (maybe after our accept), before any byte
    r, w = await asyncio.open_connection("127.0.0.1", port)
    srv.register_peer(w.get_extra_info("sockname")[1], ("fd7a:115c:a1e0::9", 41000), ("fd7a:115c:a1e0::1", 2))
    c = Client(r, w)
    from coder_agent.rpty.protocol import InitRequest, encode_init

    w.write(encode_init(InitRequest(id=sid(), height=24, width=80, command="echo via-tunnel-$((2*3))")))
    await c.expect("via-tunnel-6")
    await c.closed()
    await apoll(lambda: len(harness.events) == 2, 10)
    assert [e[0] for e in harness.events] == ["connect", "disconnect"]
    assert harness.events[0][2] == "fd7a:115c:a1e0::9"  # the tunnel's client, not the loopback socket
    # a local process straight to the loopback port is never served nor reported
    c2 = await Client.open(port, sid(), "echo leaked")
    assert b"leaked" not in await c2.closed()
    assert len(harness.events) == 2


async def test_sessions_get_the_daemons_child_priority(harness: Harness) -> None:
    from coder_agent.procprio import ChildPriority

    srv, port = await harness.server()
    srv.priority = ChildPriority(nice_increment=3)
    c = await Client.open(port, sid(), "echo nice=$(nice)")
    m = await c.expect(r"nice=(\d+)")
    assert int(m.group(1)) == min(19, os.nice(0) + 3)
    await c.close()
