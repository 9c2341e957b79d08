"""The reconnecting-PTY server (tunnel port 2, the dashboard's web terminal): asyncio around
:mod:`.protocol`.

Rules:

* :meth:`RptyServer.handle` serves one connection given as asyncio streams (the tunnel calls it);
  :meth:`RptyServer.start` also listens on 127.0.0.1 (an ephemeral port) for splicing.
* Sessions are keyed by the header's ``ID``. The first connection creates the session: the command
  (no ``Command``: the login shell with ``-l``; else ``<login shell> -c <Command>``, Go's
  ``CreateCommand``) runs in a new PTY, in its own session and process group with the PTY as its
  controlling terminal, in the configured directory (else ``$HOME``), with the environment of
  :mod:`coder_agent.scripts.childenv` plus ``TERM=xterm-256color``. ``Container`` wraps it in
  ``docker exec -it`` (:mod:`.container`). Concurrent first connections create it once.
* Attaching replays the ring (the last 64 KiB) and then streams live output, with nothing lost or
  doubled in between; every attached connection gets all output, input from any of them goes to
  the PTY (one message at a time), a resize from any applies. The header's size is applied on
  attach when both are non-zero.
* Output backpressure as Go's: the PTY is not read while a connection's send buffer is over
  ``high_water``; a connection that stays over it for ``stall_timeout`` is dropped.
* The session ends when the process exits (after its output is drained; at most ``exit_drain``
  later if a background child keeps the terminal open), when :class:`~.protocol.Lifetime` expires
  (never attached within ``attach_timeout``; ``idle_timeout`` after the last detach), or on
  :meth:`RptyServer.close`. Ending closes its connections, hangs up the terminal, sends SIGHUP to
  the process group and SIGKILL ``kill_grace`` seconds later if anything is left.
* Reporting: ``on_connect(connection_id, ip)`` when a connection arrives and
  ``on_disconnect(connection_id, ip, status_code, reason)`` when it ends (0 and "" for a normal
  end or a bad header, as Go; 1 and the error when the session could not be created or attached;
  1 "server shut down" on close). ``ip`` has no port. :attr:`RptyServer.connections` is the live
  count of open connections (Go's ``ConnCount``, for ``UpdateStats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import subprocess
import termios
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..clock import Clock, SystemClock
from ..log import get_logger
from ..scripts.childenv import ChildEnv, login_user
from ..scripts.runner import resolve_directory, wait_exit
from .container import probe_shell
from .protocol import (
    ATTACH_TIMEOUT,
    IDLE_TIMEOUT,
    RING_SIZE,
    HeaderReader,
    InitRequest,
    InputParser,
    Lifetime,
    ProtocolError,
    RingBuffer,
)

__all__ = ["RptyServer", "RptySettings", "host_of"]

OnConnect = Callable[[str, str], None]
OnDisconnect = Callable[[str, str, int, str], None]


@dataclass(frozen=True)
class RptySettings:
    idle_timeout: float = IDLE_TIMEOUT
    attach_timeout: float = ATTACH_TIMEOUT
    ring_size: int = RING_SIZE
    high_water: int = 256 << 10
    stall_timeout: float = 30.0
    exit_drain: float = 1.0
    kill_grace: float = 2.0
    probe_timeout: float = 30.0


class SessionClosed(RuntimeError):
    pass


def host_of(addr: str) -> str:
    """``addr`` without its port (``1.2.3.4:5`` → ``1.2.3.4``, ``[fd7a::1]:5`` → ``fd7a::1``)."""
    if addr.startswith("["):
        return addr[1:].split("]", 1)[0]
    if addr.count(":") == 1:
        return addr.split(":", 1)[0]
    return addr


def _set_ctty() -> None:  # runs in the child between fork and exec, after setsid
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _spawn(argv: list[str], tty: int, cwd: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``argv`` in a new session whose controlling terminal is ``tty`` (its stdin/stdout/stderr)."""
    return subprocess.Popen(argv, stdin=tty, stdout=tty, stderr=tty, cwd=cwd, env=env, start_new_session=True,
                            preexec_fn=_set_ctty)


def _winsize(fd: int, height: int, width: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


class _Session:
    def __init__(self, server: RptyServer, sid: str) -> None:
        self.server = server
        self.id = sid
        s = server.settings
        self.ring = RingBuffer(s.ring_size)
        self.lifetime = Lifetime(server.clock.monotonic(), attach_timeout=s.attach_timeout,
                                 idle_timeout=s.idle_timeout)
        self.conns: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done = asyncio.Event()
        self.closing = False
        self.reason = ""
        self.master = -1
        self.proc: subprocess.Popen[bytes] | None = None
        self._changed = asyncio.Event()
        self._input = asyncio.Lock()
        self._io_waiters: set[asyncio.Future[None]] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        self._bg: set[asyncio.Task[Any]] = set()
        self._log = get_logger("rpty", session=sid)

    # start -----------------------------------------------------------------------------

    async def start(self, init: InitRequest) -> None:
        srv = self.server
        env = dict(srv.env_factory())
        env["TERM"] = "xterm-256color"
        user = login_user(env)
        cwd = resolve_directory(srv.directory_factory(), env)
        if init.container:
            cuser, shell = await probe_shell(init.container, init.container_user, env,
                                             timeout=srv.settings.probe_timeout)
            from .container import docker_exec_argv

            argv = docker_exec_argv(init.container, cuser, shell, init.command)
        else:
            argv = [user.shell, "-c", init.command] if init.command else [user.shell, "-l"]
        if self.closing:
            raise SessionClosed("reconnecting pty closed before start")
        master, slave = os.openpty()
        try:
            if init.height and init.width:
                _winsize(slave, init.height, init.width)
            self.proc = _spawn(argv, slave, cwd, env)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        self._log.info("reconnecting pty started", pid=self.proc.pid, argv0=argv[0], cwd=cwd,
                       container=init.container or None)
        self._tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self._watch()),
                       asyncio.create_task(self._timer())]

    # tasks -----------------------------------------------------------------------------

    async def _wait_fd(self, write: bool) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        add, remove = (loop.add_writer, loop.remove_writer) if write else (loop.add_reader, loop.remove_reader)
        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        add(self.master, ready)
        self._io_waiters.add(fut)
        try:
            await fut
        finally:
            self._io_waiters.discard(fut)
            if self.master >= 0:
                remove(self.master)
        if self.closing:
            raise SessionClosed(self.reason)

    async def _read(self) -> bytes:
        while True:
            try:
                return os.read(self.master, 65536)
            except BlockingIOError:
                await self._wait_fd(False)
            except OSError as e:
                if e.errno == errno.EIO:  # every holder of the terminal closed it
                    return b""
                raise

    async def _pump(self) -> None:
        s = self.server.settings
        with contextlib.suppress(SessionClosed):
            while True:
                data = await self._read()
                if not data:
                    break
                self.ring.write(data)
                slow = []
                for cid, (_, w) in list(self.conns.items()):
                    if w.is_closing():
                        continue
                    w.write(data)
                    if w.transport.get_write_buffer_size() > s.high_water:
                        slow.append((cid, w))
                if slow:
                    await asyncio.gather(*(self._drain(cid, w) for cid, w in slow))
                if self.closing:
                    return
        if not self.closing:
            self._spawn_close("process exited")

    def _spawn_close(self, reason: str) -> None:
        task = asyncio.create_task(self.close(reason))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _drain(self, cid: str, w: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.server.settings.stall_timeout):
                await w.drain()
        except (TimeoutError, ConnectionError, OSError):
            self._log.warning("dropping a connection that does not read its output", connection=cid)
            self._drop(cid)

    def _drop(self, cid: str) -> None:
        pair = self.conns.get(cid)
        if pair is not None:
            pair[0].feed_eof()
            pair[1].close()

    async def _watch(self) -> None:
        assert self.proc is not None
        rc = await wait_exit(self.proc)
        self._log.info("reconnecting pty process exited", exit_code=rc)
        if self.closing:
            return
        pump = self._tasks[0]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pump), self.server.settings.exit_drain)
        self._spawn_close("process exited")

    async def _timer(self) -> None:
        clock = self.server.clock
        while not self.closing:
            self._changed.clear()
            deadline = self.lifetime.deadline
            if deadline is None:
                await self._changed.wait()
                continue
            if self.lifetime.expired(clock.monotonic()):
                self._spawn_close("reconnecting pty timeout")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - clock.monotonic()))

    # connections -----------------------------------------------------------------------

    def resize(self, height: int, width: int) -> None:
        if self.closing or self.master < 0:
            return
        try:
            _winsize(self.master, height, width)
        except OSError as e:
            self._log.warning("resize failed", error=str(e))

    async def write_input(self, data: bytes) -> None:
        async with self._input:
            view = memoryview(data)
            while view:
                if self.closing:
                    raise SessionClosed(self.reason)
                try:
                    view = view[os.write(self.master, view):]
                except BlockingIOError:
                    await self._wait_fd(True)

    async def attach(self, cid: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     init: InitRequest, rest: bytes) -> None:
        if self.closing:
            raise SessionClosed("reconnecting pty closed before connection")
        # Replay and registration with no await in between: no output lost or doubled.
        writer.write(self.ring.bytes())
        self.conns[cid] = (reader, writer)
        self.lifetime.attach()
        self._changed.set()
        try:
            if init.height and init.width:
                self.resize(init.height, init.width)
            parser = InputParser()
            data = rest
            while True:
                for msg in parser.feed(data):
                    await self.write_input(msg.data)
                    if msg.resize:
                        self.resize(*msg.resize)
                data = await reader.read(65536)
                if not data:
                    return
        except ProtocolError as e:
            self._log.warning("reconnecting pty input dropped the connection", connection=cid, error=str(e))
        except (SessionClosed, ConnectionError):
            return
        finally:
            self.conns.pop(cid, None)
            self.lifetime.detach(self.server.clock.monotonic())
            self._changed.set()

    # end -------------------------------------------------------------------------------

    async def close(self, reason: str) -> None:
        if self.closing:
            await self.done.wait()
            return
        self.closing, self.reason = True, reason
        self._log.info("closing reconnecting pty", reason=reason)
        self.server._forget(self)
        if not self.ready.done():
            self.ready.set_exception(SessionClosed(reason))
        for cid in list(self.conns):
            self._drop(cid)
        for fut in list(self._io_waiters):
            if not fut.done():
                fut.set_result(None)
        me = asyncio.current_task()
        for task in self._tasks[::2]:  # pump and timer; the watcher reaps the process below
            if task is not me:
                task.cancel()
        await asyncio.gather(*(t for t in self._tasks[::2] if t is not me), return_exceptions=True)
        try:
            await self._kill()
        finally:
            if self.master >= 0:
                loop = asyncio.get_running_loop()
                loop.remove_reader(self.master)
                loop.remove_writer(self.master)
                os.close(self.master)
                self.master = -1
            self.ring.clear()
            self.done.set()

    async def _kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGHUP)
        watcher = self._tasks[1]
        deadline = asyncio.get_running_loop().time() + self.server.settings.kill_grace
        while asyncio.get_running_loop().time() < deadline:
            if watcher.done() and not _group_alive(proc.pid):
                break
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if asyncio.current_task() is not watcher:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(watcher), 5.0)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RptyServer:
    """The reconnecting-PTY server (see the module rules).

    ``env`` gives each session's environment: a :class:`~coder_agent.scripts.childenv.ChildEnv`
    (its ``build()``) or a callable returning a mapping. ``directory`` is the working directory
    setting (a string or a callable for one that follows the manifest)."""

    def __init__(self, env: ChildEnv | Callable[[], Mapping[str, str]], *,
                 directory: str | Callable[[], str] = "", settings: RptySettings | None = None,
                 on_connect: OnConnect | None = None, on_disconnect: OnDisconnect | None = None,
                 clock: Clock | None = None) -> None:
        self.env_factory: Callable[[], Mapping[str, str]] = env.build if isinstance(env, ChildEnv) else env
        self.directory_factory: Callable[[], str] = directory if callable(directory) else (lambda: directory)
        self.settings = settings or RptySettings()
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.clock: Clock = clock or SystemClock()
        self.sessions: dict[str, _Session] = {}
        self._open = 0
        self._handlers: set[asyncio.Task[Any]] = set()
        self._listener: asyncio.Server | None = None
        self._closed = False
        self._log = get_logger("rpty")

    @property
    def connections(self) -> int:
        """Connections open now (from accept to close, header phase included)."""
        return self._open

    async def start(self) -> int:
        """Listen on 127.0.0.1 (an ephemeral port); returns the port."""
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._listener.sockets[0].getsockname()[1]
        return port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        await self.handle(reader, writer, f"{peer[0]}:{peer[1]}" if peer else "")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote_addr: str) -> None:
        """Serve one connection until it or its session ends; never raises for the peer's errors."""
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        cid, ip = str(uuid.uuid4()), host_of(remote_addr)
        self._open += 1
        self._report(self.on_connect, cid, ip)
        code, reason = 0, ""
        log = self._log.bind(connection=cid, remote=remote_addr)
        try:
            got = await self._read_header(reader, log)
            if got is not None and not self._closed:
                init, rest = got
                log = log.bind(session=init.id)
                try:
                    session = await self._session_for(init)
                    await session.attach(cid, reader, writer, init, rest)
                except Exception as e:  # reported to coderd as the disconnect reason
                    code, reason = 1, str(e) or type(e).__name__
                    log.warning("reconnecting pty failed", error=reason)
        except asyncio.CancelledError:
            code, reason = 1, "server shut down"
            raise
        finally:
            if self._closed and code == 0:
                code, reason = 1, "server shut down"
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            self._open -= 1
            self._report(self.on_disconnect, cid, ip, code, reason)
            if task is not None:
                self._handlers.discard(task)

    def _report(self, cb: Callable[..., None] | None, *args: Any) -> None:
        if cb is None:
            return
        try:
            cb(*args)
        except Exception as e:  # a reporting hook must not break the terminal
            self._log.warning("connection report hook failed", error=str(e))

    async def _read_header(self, reader: asyncio.StreamReader, log: Any) -> tuple[InitRequest, bytes] | None:
        hr = HeaderReader()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    log.info("connection closed before the reconnecting pty header")
                    return None
                got = hr.feed(data)
                if got is not None:
                    return got
        except ProtocolError as e:
            log.warning("bad reconnecting pty header", error=str(e))
        except ConnectionError as e:
            log.info("connection failed before the reconnecting pty header", error=str(e))
        return None

    async def _session_for(self, init: InitRequest) -> _Session:
        s = self.sessions.get(init.id)
        if s is not None:
            await asyncio.shield(s.ready)
            return s
        s = _Session(self, init.id)
        self.sessions[init.id] = s
        try:
            await s.start(init)
        except BaseException as e:
            self._forget(s)
            if not s.ready.done():
                s.ready.set_exception(e if isinstance(e, Exception) else SessionClosed("cancelled"))
                s.ready.exception()  # retrieved: waiting attachers get it, nobody else must log it
            s.closing = True
            s.done.set()
            raise
        s.ready.set_result(None)
        return s

    def _forget(self, s: _Session) -> None:
        if self.sessions.get(s.id) is s:
            del self.sessions[s.id]

    async def close(self) -> None:
        """Stop listening, end every session (killing its processes) and every connection."""
        self._closed = True
        if self._listener is not None:
            self._listener.close()
        await asyncio.gather(*(s.close("server shut down") for s in list(self.sessions.values())),
                             return_exceptions=True)
        for t in list(self._handlers):
            t.cancel()
        await asyncio.gather(*list(self._handlers), return_exceptions=True)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.wait_closed(), 5.0)
