"""Reconnecting-PTY sessions: what both backends share, and the buffered backend.

Rules (both backends):

* A session is created by its first connection and lives until :class:`~.protocol.Lifetime`
  expires (never attached within ``attach_timeout``; ``idle_timeout`` after the last detach), its
  process ends (buffered), or :meth:`Session.close`. Closing ends every attached connection.
* The command (:func:`command_for`): no ``Command`` runs the login shell with ``-l``, else
  ``<login shell> -c <Command>`` (Go's ``CreateCommand``); ``Container`` wraps it in ``docker exec
  -it`` (:mod:`.container`). Environment: :mod:`coder_agent.childenv` plus
  ``TERM=xterm-256color``; directory: the configured one, else ``$HOME``.
* Input from a connection is a stream of :class:`~.protocol.Input` messages; a resize applies when
  both sizes are non-zero, the header's size on attach too. A malformed message ends that
  connection only.

Buffered backend (:class:`BufferedSession`, Go's ``buffered.go``):

* One process in one PTY for the session. Its output goes to the 64 KiB ring and to every
  attached connection; attaching writes the ring first, with no await between that and joining
  the fan-out, so nothing is lost or doubled.
* Backpressure as Go's: the PTY is not read while a connection's send buffer is over
  ``high_water``; a connection stuck over it for ``stall_timeout`` is dropped.
* The process exiting ends the session once its output is drained (at most ``exit_drain``
  seconds later if a background child holds the terminal); the process group is then killed
  (:meth:`~.ptyproc.PtyProcess.kill`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..childenv import login_user
from ..log import get_logger
from ..scripts.runner import resolve_directory
from .container import docker_exec_argv, probe_shell
from .protocol import (
    ATTACH_TIMEOUT,
    IDLE_TIMEOUT,
    RING_SIZE,
    InitRequest,
    InputParser,
    Lifetime,
    ProtocolError,
    RingBuffer,
)
from .ptyproc import PtyClosed, PtyProcess

if TYPE_CHECKING:
    from ..clock import Clock

__all__ = ["BufferedSession", "RptySettings", "Session", "SessionClosed", "command_for"]


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
    """The session ended (or never started); ``str()`` says why."""


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str]
    cwd: str


async def command_for(init: InitRequest, env: Mapping[str, str], directory: str, settings: RptySettings) -> Command:
    """What the session runs (see the module rules); raises ContainerError for a bad container."""
    full = dict(env)
    full["TERM"] = "xterm-256color"
    cwd = resolve_directory(directory, full)
    if init.container:
        user, shell = await probe_shell(init.container, init.container_user, full, timeout=settings.probe_timeout)
        return Command(docker_exec_argv(init.container, user, shell, init.command), full, cwd)
    shell = login_user(full).shell
    return Command([shell, "-c", init.command] if init.command else [shell, "-l"], full, cwd)


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _buffered(w: asyncio.StreamWriter) -> int:
    """Bytes waiting in ``w``'s transport; a transport that cannot tell is always drained."""
    try:
        return int(w.transport.get_write_buffer_size())
    except (NotImplementedError, AttributeError):
        return 1 << 62


class Session:
    """The lifetime, the connections and closing; a backend adds the process side."""

    backend = ""

    def __init__(self, sid: str, settings: RptySettings, clock: Clock,
                 forget: Callable[[Session], None]) -> None:
        self.id = sid
        self.settings = settings
        self.clock = clock
        self.lifetime = Lifetime(clock.monotonic(), attach_timeout=settings.attach_timeout,
                                 idle_timeout=settings.idle_timeout)
        self.conns: dict[str, Conn] = {}
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done = asyncio.Event()
        self.closing = False
        self.reason = ""
        self._forget = forget
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._bg: set[asyncio.Task[Any]] = set()
        self._log = get_logger("rpty", session=sid)

    async def start(self, cmd: Command, init: InitRequest) -> None:
        self._tasks.append(asyncio.create_task(self._timer()))

    # lifetime --------------------------------------------------------------------------

    async def _timer(self) -> None:
        while not self.closing:
            self._changed.clear()
            deadline = self.lifetime.deadline
            if deadline is None:
                await self._changed.wait()
                continue
            if self.lifetime.expired(self.clock.monotonic()):
                self.spawn_close("reconnecting pty timeout")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - self.clock.monotonic()))

    def _attached(self, cid: str, conn: Conn) -> None:
        self.conns[cid] = conn
        self.lifetime.attach()
        self._changed.set()

    def _detached(self, cid: str) -> None:
        if self.conns.pop(cid, None) is not None:
            self.lifetime.detach(self.clock.monotonic())
            self._changed.set()

    def drop(self, cid: str) -> None:
        """End one connection (its attach returns)."""
        conn = self.conns.get(cid)
        if conn is not None:
            conn[0].feed_eof()
            conn[1].close()

    # input -----------------------------------------------------------------------------

    async def _input_loop(self, pty: PtyProcess, cid: str, reader: asyncio.StreamReader, rest: bytes) -> None:
        parser = InputParser()
        data = rest
        try:
            while True:
                for msg in parser.feed(data):
                    await pty.write(msg.data)
                    if msg.resize:
                        self._resize(pty, *msg.resize)
                data = await reader.read(65536)
                if not data:
                    return
        except ProtocolError as e:
            self._log.warning("bad reconnecting pty input; dropping the connection", connection=cid, error=str(e))
        except (PtyClosed, ConnectionError, OSError):
            return

    def _resize(self, pty: PtyProcess, height: int, width: int) -> None:
        try:
            pty.resize(height, width)
        except OSError as e:
            self._log.warning("reconnecting pty resize failed", error=str(e))

    # end -------------------------------------------------------------------------------

    def spawn_close(self, reason: str) -> None:
        task = asyncio.create_task(self.close(reason))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def close(self, reason: str) -> None:
        if self.closing:
            await self.done.wait()
            return
        self.closing, self.reason = True, reason
        self._log.info("closing reconnecting pty", reason=reason, backend=self.backend)
        self._forget(self)
        if not self.ready.done():
            self.ready.set_exception(SessionClosed(reason))
            self.ready.exception()
        for cid in list(self.conns):
            self.drop(cid)
        me = asyncio.current_task()
        others = [t for t in self._tasks if t is not me]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        try:
            await self._shutdown()
        finally:
            self.done.set()

    async def _shutdown(self) -> None:
        """The backend's part of closing (the process side)."""

    async def attach(self, cid: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     init: InitRequest, rest: bytes) -> None:
        raise NotImplementedError


class BufferedSession(Session):
    backend = "buffered"

    def __init__(self, sid: str, settings: RptySettings, clock: Clock,
                 forget: Callable[[Session], None]) -> None:
        super().__init__(sid, settings, clock, forget)
        self.ring = RingBuffer(settings.ring_size)
        self.pty: PtyProcess | None = None

    async def start(self, cmd: Command, init: InitRequest) -> None:
        if self.closing:
            raise SessionClosed("reconnecting pty closed before start")
        self.pty = PtyProcess(cmd.argv, cmd.env, cmd.cwd, init.height, init.width)
        self._log.info("reconnecting pty started", backend=self.backend, pid=self.pty.pid, argv0=cmd.argv[0],
                       cwd=cmd.cwd, container=init.container or None)
        await super().start(cmd, init)
        self._tasks += [asyncio.create_task(self._pump()), asyncio.create_task(self._watch())]

    async def _pump(self) -> None:
        assert self.pty is not None
        while True:
            data = await self.pty.read()
            if not data:
                break
            self.ring.write(data)
            slow = []
            for cid, (_, w) in list(self.conns.items()):
                if w.is_closing():
                    continue
                w.write(data)
                if _buffered(w) > self.settings.high_water:
                    slow.append((cid, w))
            if slow:
                await asyncio.gather(*(self._drain(cid, w) for cid, w in slow))
        if not self.closing:
            self.spawn_close("process exited")

    async def _drain(self, cid: str, w: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.settings.stall_timeout):
                await w.drain()
        except (TimeoutError, ConnectionError, OSError):
            self._log.warning("dropping a connection that does not read its output", connection=cid)
            self.drop(cid)

    async def _watch(self) -> None:
        assert self.pty is not None
        rc = await self.pty.wait()
        self._log.info("reconnecting pty process exited", exit_code=rc)
        pump = self._tasks[1]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pump), self.settings.exit_drain)
        if not self.closing:
            self.spawn_close("process exited")

    async def attach(self, cid: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     init: InitRequest, rest: bytes) -> None:
        if self.closing or self.pty is None:
            raise SessionClosed("reconnecting pty closed before connection")
        # The ring, then joining the fan-out, with no await in between.
        writer.write(self.ring.bytes())
        self._attached(cid, (reader, writer))
        try:
            if init.height and init.width:
                self._resize(self.pty, init.height, init.width)
            await self._input_loop(self.pty, cid, reader, rest)
        finally:
            self._detached(cid)

    async def _shutdown(self) -> None:
        if self.pty is not None:
            await self.pty.kill(self.settings.kill_grace)
        self.ring.clear()
