"""One SSH session's command: spawned, bytes copied both ways, resized, signalled, reaped.

Rules:

* The command runs in a new session (``setsid``: its own process group, ``pgid == pid``); with a
  PTY the slave is its stdin/stdout/stderr and its controlling terminal (job control, ^C, SIGWINCH
  work as under OpenSSH), without one it gets three pipes.
* Input: the client's bytes go to the PTY master or the stdin pipe (a full pipe stops reading
  from the channel, so the SSH window gives the client back-pressure); the client's EOF closes the
  stdin pipe (with a PTY it is ignored, as OpenSSH). A window change resizes the PTY; a client's
  ``signal`` request signals the command's process (Go's ``handleSignal``).
* Output: with a PTY, until the command exits, then what the master still holds (a background
  job that keeps the terminal open does not hold the session, as OpenSSH); without one, until
  both pipes reach EOF (a background job that keeps them open does, as OpenSSH and Go).
* The exit status is sent only when the output is flushed; then the channel closes.
* The channel closing first (client gone, connection lost, server stopping) hangs the session
  up: SIGHUP to the whole process group, then, if the command itself is still running after
  ``kill_grace`` seconds, SIGKILL to the group. Jobs that ignore SIGHUP (``nohup``) outlive a
  command that exited: VS Code's server is started that way over an exec session.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..scripts.runner import wait_exit
from .policy import SESSION_ERROR_EXIT, exit_status
from .termmodes import apply_modes

__all__ = ["PtyRequest", "SessionResult", "hang_up", "run_session"]

_CHUNK = 65536


@dataclass(frozen=True)
class PtyRequest:
    term: str
    cols: int
    rows: int
    xpixels: int = 0
    ypixels: int = 0
    modes: Mapping[int, int] = field(default_factory=dict)  # the client's terminal modes (opcode → value)


@dataclass(frozen=True)
class SessionResult:
    status: int  # the exit status sent (or that would have been: the channel may be gone)
    reason: str  # "" when the command ended by itself


class Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...


class Input(Protocol):
    """What arrives from the client besides bytes: exceptions raised by ``Reader.read``."""

    def control(self, exc: BaseException) -> PtyRequest | str | bool:
        """A window change (the new size), a signal (its SSH name), True for one to ignore (a
        break), False for the end of the input (the channel is gone)."""
        ...


def _set_winsize(fd: int, size: PtyRequest) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.rows, size.cols, size.xpixels, size.ypixels))


def _take_terminal() -> None:  # runs in the child between fork and exec, after setsid
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def _wait_fd(fd: int, *, write: bool = False) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, ready)
    try:
        await fut
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await _wait_fd(fd, write=True)
            continue
        view = view[n:]


def _signal_number(name: str) -> int | None:
    sig = getattr(signal, "SIG" + name.upper().removeprefix("SIG"), None)
    return int(sig) if isinstance(sig, signal.Signals) else None


async def hang_up(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGHUP the session's process group; SIGKILL it if the command outlives ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGHUP)
    if proc.poll() is not None:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wait_exit(proc), grace)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


async def _pump_input(stdin: Reader, fd: int, events: Input, proc: subprocess.Popen[bytes], *, is_pty: bool) -> None:
    """Client → command until the client's EOF (then a stdin pipe is closed; a PTY is left alone)."""
    broken = False
    try:
        while True:
            try:
                data = await stdin.read(_CHUNK)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # window changes and signals arrive as exceptions from read()
                what = events.control(e)
                if isinstance(what, PtyRequest):
                    if is_pty:
                        with contextlib.suppress(OSError):
                            _set_winsize(fd, what)
                elif isinstance(what, str):
                    num = _signal_number(what)
                    if num is not None and proc.poll() is None:
                        with contextlib.suppress(ProcessLookupError):
                            proc.send_signal(num)
                elif not what:
                    return
                continue
            if not data:
                return
            if not broken:
                try:
                    await _write_all(fd, data)
                except OSError:  # the command closed its stdin: drop the rest, as sshd
                    broken = True
    finally:
        if not is_pty:
            with contextlib.suppress(OSError):
                os.close(fd)


async def _pump_pipe(fd: int, out: Writer) -> None:
    """One output pipe → the channel, until EOF."""
    try:
        while True:
            try:
                data = os.read(fd, _CHUNK)
            except BlockingIOError:
                await _wait_fd(fd)
                continue
            if not data:
                return
            out.write(data)
            await out.drain()
    finally:
        os.close(fd)


async def _pump_pty(fd: int, out: Writer, exited: asyncio.Future[int]) -> None:
    """The PTY master → the channel, until the command exited and the master is drained."""
    while True:
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            if exited.done():
                return
            readable: asyncio.Future[Any] = asyncio.ensure_future(_wait_fd(fd))
            waiters: list[asyncio.Future[Any]] = [readable, exited]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                readable.cancel()
            continue
        except OSError as e:
            if e.errno == errno.EIO:  # every slave closed
                return
            raise
        if not data:
            return
        out.write(data)
        await out.drain()


async def run_session(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    *,
    stdin: Reader,
    stdout: Writer,
    stderr: Writer,
    events: Input,
    pty: PtyRequest | None,
    closed: asyncio.Event,
    send_exit: Callable[[int], None],
    kill_grace: float = 3.0,
    on_spawn: Callable[[subprocess.Popen[bytes]], None] | None = None,
    preamble: bytes = b"",
) -> SessionResult:
    """Run one session's command to its end (see the module rules). ``closed`` is set when the
    channel is gone; ``send_exit`` sends the exit status and closes the channel. Never raises for
    the command's own failures: a command that cannot start is status 229 with the reason."""
    master: int | None = None
    slave: int | None = None
    try:
        if pty is not None:
            master, slave = os.openpty()
            _set_winsize(slave, pty)
            if pty.modes:
                with contextlib.suppress(OSError, termios.error):  # the defaults are a fine fallback
                    termios.tcsetattr(slave, termios.TCSANOW, apply_modes(termios.tcgetattr(slave), pty.modes))
            env = {**env, "SSH_TTY": os.ttyname(slave)}  # as OpenSSH and Go's pty package
            # Not asyncio's subprocess: it cannot make the PTY the controlling terminal (preexec_fn).
            proc = subprocess.Popen(  # noqa: ASYNC220
                list(argv), stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=dict(env),
                start_new_session=True, preexec_fn=_take_terminal)
        else:
            proc = subprocess.Popen(  # noqa: ASYNC220
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                env=dict(env), start_new_session=True)
    except (OSError, subprocess.SubprocessError) as e:
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
        reason = f"start {argv[0]}: {e.strerror if isinstance(e, OSError) and e.strerror else e}"
        with contextlib.suppress(Exception):
            stderr.write(f"coder-agent: {reason}\r\n".encode())
            await asyncio.wait_for(stderr.drain(), 5)
        send_exit(SESSION_ERROR_EXIT)
        return SessionResult(SESSION_ERROR_EXIT, reason)
    finally:
        if slave is not None:
            os.close(slave)
    if on_spawn is not None:
        on_spawn(proc)

    loop = asyncio.get_running_loop()
    exited: asyncio.Future[int] = loop.create_future()

    async def reap() -> None:
        rc = await wait_exit(proc)
        if not exited.done():
            exited.set_result(rc)

    tasks: list[asyncio.Task[None]] = [asyncio.ensure_future(reap())]
    outputs: list[asyncio.Task[None]] = []
    if master is not None:
        os.set_blocking(master, False)
        if preamble:
            stdout.write(preamble)
        tasks.append(asyncio.ensure_future(_pump_input(stdin, master, events, proc, is_pty=True)))
        outputs.append(asyncio.ensure_future(_pump_pty(master, stdout, exited)))
    else:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        fds = [os.dup(f.fileno()) for f in (proc.stdin, proc.stdout, proc.stderr)]
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()
        for fd in fds:
            os.set_blocking(fd, False)
        tasks.append(asyncio.ensure_future(_pump_input(stdin, fds[0], events, proc, is_pty=False)))
        outputs.append(asyncio.ensure_future(_pump_pipe(fds[1], stdout)))
        outputs.append(asyncio.ensure_future(_pump_pipe(fds[2], stderr)))

    async def finished() -> None:
        await exited
        await asyncio.gather(*outputs, return_exceptions=True)

    done_task = asyncio.ensure_future(finished())
    closed_task = asyncio.ensure_future(closed.wait())
    try:
        await asyncio.wait({done_task, closed_task}, return_when=asyncio.FIRST_COMPLETED)
        if done_task.done() and not closed.is_set():
            status = exit_status(exited.result())
            send_exit(status)
            return SessionResult(status, "")
        await hang_up(proc, kill_grace)
        rc = await wait_exit(proc)
        return SessionResult(exit_status(rc), "connection closed" if not done_task.done() else "")
    finally:
        for t in (*tasks, *outputs, done_task, closed_task):
            t.cancel()
        await asyncio.gather(*tasks, *outputs, done_task, closed_task, return_exceptions=True)
        if master is not None:
            os.close(master)

