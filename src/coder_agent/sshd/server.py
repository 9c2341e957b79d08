"""The agent's SSH server (Coder's ``agent/agentssh`` behaviour) on a loopback port, built on asyncssh.

The tunnel serves its SSH ports (1 and 22) by splicing each tunnelled TCP connection to
:meth:`SshServer.start`'s loopback port, and tells the server, with :meth:`SshServer.register_peer`
(before it splices the first byte), which tunnel address that loopback connection stands for.
Only registered loopback connections are served: there is no SSH authentication, and any local
process can reach a loopback port.

Rules:

* No client authentication (Go's ``NoClientAuth``): any user name, no method needed. The host key
  is Ed25519 from :func:`~.policy.host_key_seed` (stable per owner/workspace/agent; never logged).
  :meth:`SshServer.set_host_key_seed` changes it for connections accepted from then on; live
  connections keep the key they were accepted with (a re-key must present the same key).
* Channels: ``session``; ``direct-tcpip`` and ``direct-streamlocal@openssh.com`` (any destination
  the workspace can reach, as Go); global requests ``tcpip-forward`` and
  ``streamlocal-forward@openssh.com`` with their cancels (any bind, as Go); agent forwarding.
* Sessions: ``shell``/``exec`` run the command (:mod:`.session`) with the policy's argv and
  environment (:mod:`.policy`), in the manifest's directory (else ``$HOME``); subsystem ``sftp``
  is asyncssh's SFTP server in this process, on the whole filesystem with the daemon user's rights,
  relative paths from ``$HOME``; other subsystems are refused (as gliderlabs/ssh).
* ``block_file_transfer`` refuses sftp/scp/rsync/nc sessions (:func:`~.policy.file_transfer_blocked`).
* Reporting: every session but a JetBrains one (Go counts those through their forwarded
  connection) calls ``reporter.on_connect`` when it starts and ``on_disconnect`` with its exit
  status and a reason when it ends; :meth:`SshServer.session_counts` counts running commands per
  type (``ssh``, ``vscode``, ``jetbrains``) for the stats reporter.
* :meth:`SshServer.stop` closes every connection (sessions hang up, see :mod:`.session`) and
  waits for their commands, bounded by the kill grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import uuid
import warnings
from collections.abc import Awaitable, Mapping
from typing import Protocol, cast

with warnings.catch_warnings():  # asyncssh still imports DSA support, which cryptography deprecates
    warnings.filterwarnings("ignore", message=".*DSA")
    import asyncssh
    from asyncssh.channel import SSHChannel
    from asyncssh.forward import SSHForwarder
    from asyncssh.misc import SoftEOFReceived
    from asyncssh.stream import SSHServerStreamSession

from ..childenv import ChildEnv, login_user
from ..log import get_logger
from ..procprio import ChildPriority
from .jetbrains import ListenerCmdlines, is_jetbrains
from .policy import (
    BLOCKED_EXIT,
    BLOCKED_MESSAGE,
    SESSION_ERROR_EXIT,
    SESSION_TYPE_VAR,
    Peer,
    file_transfer_blocked,
    motd_bytes,
    session_argv,
    session_env,
    session_type,
)
from .session import PtyRequest, SessionResult, run_session

__all__ = ["ConnectionReporter", "SshServer"]

_SFTP_VERSION = 3


class ConnectionReporter(Protocol):
    """Where sessions are reported (ReportConnection CONNECT/DISCONNECT). ``type`` is ``ssh``,
    ``vscode``, ``jetbrains`` or ``unknown`` (a ``CODER_SSH_SESSION_TYPE`` nobody knows: Go's
    TYPE_UNSPECIFIED); ``ip`` the client's tunnel address (its host); ``id`` a UUID string. Called
    on the event loop; must not block."""

    def on_connect(self, id: str, type: str, ip: str) -> None: ...

    def on_disconnect(self, id: str, type: str, ip: str, status_code: int, reason: str) -> None: ...


def host_key(seed: bytes) -> asyncssh.SSHKey:
    """The Ed25519 host key for a 32-byte seed."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.from_private_bytes(seed[:32]).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    return asyncssh.import_private_key(pem)


class SshServer:
    """The SSH server. ``env`` is the daemon's :class:`ChildEnv` (manifest, token, agent variables);
    ``process_env`` replaces ``os.environ`` as the base of commands' environments (tests);
    ``priority`` is the daemon's ``oom_score_adj``/nice for children (as Go's agentexec);
    ``max_timeout`` is Go's ``--ssh-max-timeout`` (seconds, 0: none; see :func:`_keepalive`);
    ``require_registered_peer`` False serves any loopback client (tests, benchmarks) — never in
    the daemon: there is no authentication, so any local process could run commands as us."""

    def __init__(
        self,
        env: ChildEnv,
        *,
        host_key_seed: bytes,
        block_file_transfer: bool = False,
        reporter: ConnectionReporter | None = None,
        kill_grace: float = 3.0,
        process_env: Mapping[str, str] | None = None,
        priority: ChildPriority | None = None,
        max_timeout: float = 0.0,
        require_registered_peer: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        self.env = env
        self.block_file_transfer = block_file_transfer
        self.reporter = reporter
        self.kill_grace = kill_grace
        self.process_env = process_env
        self.priority = priority or ChildPriority()
        self.max_timeout = max_timeout
        self.require_registered_peer = require_registered_peer
        self.listener_cmdline = ListenerCmdlines()
        self.host = host
        self.log = get_logger("sshd")
        self._seed = host_key_seed
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._conns: set[_Connection] = set()
        self._peers: dict[int, tuple[tuple[str, int], tuple[str, int] | None]] = {}
        self._counts = {"ssh": 0, "vscode": 0, "jetbrains": 0}
        self._running: set[asyncio.Event] = set()  # one per running command: set when it is over
        self.port = 0

    # -- API -------------------------------------------------------------------------------------

    async def start(self) -> int:
        """Listen on ``host`` (an ephemeral port); returns the port."""
        logging.getLogger("asyncssh").setLevel(logging.WARNING)  # it logs commands and env at INFO
        self._acceptor = await asyncssh.listen(
            self.host, 0, server_factory=lambda: _Connection(self), server_host_keys=[host_key(self._seed)],
            encoding=None, line_editor=False, agent_forwarding=True, allow_scp=False, x11_forwarding=False,
            login_timeout=120, config=[], **_keepalive(self.max_timeout))
        self.port = int(self._acceptor.sockets[0].getsockname()[1])
        self.log.info("ssh server listening", port=self.port)
        return self.port

    def set_host_key_seed(self, seed: bytes) -> bool:
        """Present the key for ``seed`` to connections accepted from now on (asyncssh's
        ``SSHAcceptor.update``: a connection copies the host keys when it is accepted, so live ones
        keep theirs). Returns whether the key changed."""
        if seed == self._seed:
            return False
        self._seed = seed
        if self._acceptor is not None:
            self._acceptor.update(server_host_keys=[host_key(seed)])
        return True

    async def stop(self) -> None:
        """Close the listener and every connection; wait (bounded) for their commands to end."""
        if self._acceptor is not None:
            self._acceptor.close()
            self._acceptor = None
        for c in list(self._conns):
            c.close()
        waits = [asyncio.ensure_future(e.wait()) for e in self._running]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self.kill_grace + 5)
            for w in pending:
                w.cancel()

    def register_peer(self, local_client_port: int, tunnel_remote_addr: tuple[str, int],
                      tunnel_local_addr: tuple[str, int] | None = None) -> None:
        """The loopback connection from ``local_client_port`` carries the tunnel's connection from
        ``tunnel_remote_addr`` (to ``tunnel_local_addr``, the agent's side, when given)."""
        self._peers[local_client_port] = (tunnel_remote_addr, tunnel_local_addr)

    def unregister_peer(self, local_client_port: int) -> None:
        """Forget a registration whose connection never reached the server (the tunnel's splice
        failed); one that did reach it is claimed by it when it authenticates."""
        self._peers.pop(local_client_port, None)

    def claim_peer(self, client_port: int) -> tuple[tuple[str, int], tuple[str, int] | None] | None:
        """The registration for a loopback connection, handed over to it (None: unregistered)."""
        return self._peers.pop(client_port, None)

    def session_counts(self) -> dict[str, int]:
        """Running commands per session type: ``ssh``, ``vscode``, ``jetbrains``."""
        return dict(self._counts)

    # -- for connections and sessions ------------------------------------------------------------

    def count(self, kind: str, delta: int) -> None:
        if kind in self._counts:
            self._counts[kind] += delta

    def report_connect(self, id: str, kind: str, ip: str) -> None:
        if self.reporter is not None:
            try:
                self.reporter.on_connect(id, kind, ip)
            except Exception:
                self.log.exception("connection reporter failed")

    def report_disconnect(self, id: str, kind: str, ip: str, status: int, reason: str) -> None:
        if self.reporter is not None:
            try:
                self.reporter.on_disconnect(id, kind, ip, status, reason)
            except Exception:
                self.log.exception("connection reporter failed")


def _keepalive(max_timeout: float) -> dict[str, float]:
    """Go's ``MaxTimeout``: 3 s or more becomes a keepalive (a third of it, 3 unanswered probes
    drop the client). Shorter (odd), one probe per ``max_timeout`` and the first unanswered drops
    the client: Go's absolute connection deadline is not reproduced. 0: neither."""
    if max_timeout >= 3:
        return {"keepalive_interval": max_timeout / 3, "keepalive_count_max": 3}
    if max_timeout > 0:
        return {"keepalive_interval": max_timeout, "keepalive_count_max": 1}
    return {"keepalive_interval": 0}


class _Connection(asyncssh.SSHServer):
    def __init__(self, server: SshServer) -> None:
        self.server = server
        self.conn: asyncssh.SSHServerConnection | None = None
        self.client_port = 0
        self.registration: tuple[tuple[str, int], tuple[str, int] | None] | None = None
        self.claimed = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.client_port = int((conn.get_extra_info("peername") or ("", 0))[1])
        self.server._conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._conns.discard(self)
        if not self.claimed:  # closed before authentication: its registration is of no more use
            self.server.claim_peer(self.client_port)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def peer(self) -> Peer:
        """Both ends as the session reports them: the tunnel's when registered, else the socket's."""
        if self.registration is not None:
            (rhost, rport), local = self.registration
            lhost, lport = local if local is not None else ("0.0.0.0", 0)
            return Peer(rhost, rport, lhost, lport)
        assert self.conn is not None
        sock = self.conn.get_extra_info("sockname") or ("127.0.0.1", 0)
        peer = self.conn.get_extra_info("peername") or ("127.0.0.1", 0)
        return Peer(str(peer[0]), int(peer[1]), str(sock[0]), int(sock[1]))

    def begin_auth(self, username: str) -> bool:
        # No authentication (Go's NoClientAuth): the tunnel authenticated the peer. So a loopback
        # client the tunnel did not register (it registers before it splices the first byte, and
        # key exchange is over by now) is some local process: it gets no way to authenticate.
        if not self.claimed:
            self.claimed = True
            self.registration = self.server.claim_peer(self.client_port)
        if self.server.require_registered_peer and self.registration is None:
            self.server.log.warning("ssh connection refused: not from the tunnel", client_port=self.client_port)
            return True
        return False

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        return _Session(self)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> Awaitable[asyncssh.SSHTCPSession[bytes]]:
        return self._forward(dest_host, dest_port)

    async def _forward(self, host: str, port: int) -> asyncssh.SSHTCPSession[bytes]:
        """asyncssh's own forwarding, watched when the destination is a JetBrains backend."""
        jetbrains = is_jetbrains(await asyncio.to_thread(self.server.listener_cmdline, port))
        try:
            _, peer = await asyncio.get_running_loop().create_connection(SSHForwarder, host, port)
        except OSError as e:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(e)) from None
        # An SSHForwarder is what asyncssh itself hands back as the channel's session.
        fwd = SSHForwarder(peer) if not jetbrains else _JetBrainsForward(peer, self.server, self.peer().client_host)
        return cast("asyncssh.SSHTCPSession[bytes]", fwd)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return True

    def unix_connection_requested(self, dest_path: str) -> bool:
        return True

    def unix_server_requested(self, listen_path: str) -> bool:
        try:  # as Go: the socket's parent directory is created (0700) when missing
            os.makedirs(os.path.dirname(listen_path) or ".", 0o700, exist_ok=True)
        except OSError as e:
            self.server.log.warning("unix forward refused", path=listen_path, error=str(e))
            return False
        return True


class _JetBrainsForward(SSHForwarder):
    """A forwarded channel to a JetBrains backend: one ``jetbrains`` session while it is open."""

    def __init__(self, peer: SSHForwarder, server: SshServer, ip: str) -> None:
        super().__init__(peer)
        self._server, self._ip, self._id = server, ip, str(uuid.uuid4())
        self._open = True
        server.count("jetbrains", 1)
        server.report_connect(self._id, "jetbrains", ip)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._open:
            self._open = False
            self._server.count("jetbrains", -1)
            self._server.report_disconnect(self._id, "jetbrains", self._ip, 0, "normal close")


class _HomeSFTPServer(asyncssh.SFTPServer):
    """asyncssh's SFTP server on the real filesystem, relative paths taken from ``$HOME``."""

    def __init__(self, chan: SSHChannel[bytes], home: str) -> None:
        assert isinstance(chan, asyncssh.SSHServerChannel)
        super().__init__(chan)
        self._home = os.fsencode(home)

    def map_path(self, path: bytes) -> bytes:
        return path if path.startswith(b"/") else posixpath.join(self._home, path)

    # File data is read and written in a thread: a slow disk must not stall the daemon's loop.
    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        return await asyncio.to_thread(super().read, file_obj, offset, size)  # type: ignore[arg-type]

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        return await asyncio.to_thread(super().write, file_obj, offset, data)  # type: ignore[arg-type]

    def exit(self) -> None:
        # asyncssh closes the channel without an exit status; scp (SFTP mode) then fails. Go sends 0.
        with contextlib.suppress(Exception):
            self.channel.exit(0)


class _Control:
    """Decodes asyncssh's in-band exceptions for :func:`~.session.run_session`."""

    def control(self, exc: BaseException) -> PtyRequest | str | bool:
        if isinstance(exc, asyncssh.TerminalSizeChanged):
            return PtyRequest("", exc.width, exc.height, exc.pixwidth, exc.pixheight)
        if isinstance(exc, asyncssh.SignalReceived):
            return exc.signal
        return isinstance(exc, asyncssh.BreakReceived | SoftEOFReceived)


class _Session(SSHServerStreamSession[bytes]):
    def __init__(self, owner: _Connection) -> None:
        self.owner = owner
        self.server = owner.server
        penv = self._penv()
        self.home = penv.get("HOME") or login_user(penv).home  # $HOME first, as Go's userHomeDir
        super().__init__(self._run, lambda chan: _HomeSFTPServer(chan, self.home), _SFTP_VERSION, False)
        self.id = str(uuid.uuid4())
        self.kind = "ssh"
        self.ip = ""
        self.closed = asyncio.Event()
        self.started = False  # reported connected
        self.command_running = False
        self.finished = False
        self._pty: PtyRequest | None = None

    def _penv(self) -> Mapping[str, str]:
        return self.server.process_env if self.server.process_env is not None else os.environ

    def _channel(self) -> asyncssh.SSHServerChannel[bytes]:
        chan = self._chan
        assert isinstance(chan, asyncssh.SSHServerChannel)
        return chan

    # -- asyncssh callbacks ----------------------------------------------------------------------

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int],
                      term_modes: Mapping[int, int]) -> bool:
        cols, rows, xpix, ypix = term_size
        self._pty = PtyRequest(term_type, cols, rows, xpix, ypix, dict(term_modes))
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == "sftp"

    def session_started(self) -> None:
        try:
            self._start()
        except Exception as e:  # an exception here would take the whole connection down
            self.server.log.error("ssh session failed to start", error=f"{type(e).__name__}: {e}")
            self._finish(SESSION_ERROR_EXIT, f"start: {e}")
            with contextlib.suppress(Exception):
                self._channel().exit(SESSION_ERROR_EXIT)

    def _start(self) -> None:
        chan = self._channel()
        self.kind, _ = session_type(chan.get_environment())
        self.ip = self.owner.peer().client_host
        self.started = True
        if self.kind == "unknown":
            self.server.log.warning("invalid ssh session type", session_id=self.id)
        if self.kind != "jetbrains":  # counted and reported through its forwarded channel
            self.server.report_connect(self.id, self.kind, self.ip)
        command, subsystem = chan.get_command(), chan.get_subsystem()
        if self.server.block_file_transfer and file_transfer_blocked(command, subsystem):
            self.server.log.warning("file transfer blocked", session_id=self.id,
                                    subsystem=subsystem or "", command=(command or "").split(" ", 1)[0])
            if subsystem is None:  # sftp would read the message as a (too long) packet
                chan.write(BLOCKED_MESSAGE)
            self._finish(BLOCKED_EXIT, "file transfer blocked")
            chan.exit(BLOCKED_EXIT)
            return
        if subsystem is not None:
            self.server.log.info("sftp session", session_id=self.id)
        super().session_started()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.closed.set()
        if self.started and not self.command_running:  # sftp: the channel's end is the session's end
            self._finish(0 if exc is None else 255, "" if exc is None else str(exc))

    # -- the command -----------------------------------------------------------------------------

    def _finish(self, status: int, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        if self.kind != "jetbrains":
            self.server.report_disconnect(self.id, self.kind, self.ip, status, reason)

    def _environment(self, chan: asyncssh.SSHServerChannel[bytes]) -> dict[str, str]:
        e = self.server.env
        penv = self._penv()
        _, client_env = session_type(chan.get_environment())
        client_env.pop(SESSION_TYPE_VAR, None)
        return session_env(penv, client_env, user=login_user(penv), bin_dir=e.bin_dir, peer=self.owner.peer(),
                           manifest=e.manifest, secrets=e.secrets, agent_env=e.agent_env, agent_url=e.agent_url,
                           token=e.token(), token_in_env=e.token_in_env,
                           term=self._pty.term if self._pty is not None else None,
                           auth_sock=chan.get_agent_path())

    def _directory(self) -> str:
        manifest = self.server.env.manifest or {}
        d = str(manifest.get("directory") or "")
        if d and os.path.isdir(d):
            return d
        return self.home if os.path.isdir(self.home) else "/"

    def _motd(self, command: str | None) -> bytes:
        if command or self._pty is None or os.path.exists(os.path.join(self.home, ".hushlogin")):
            return b""
        path = str((self.server.env.manifest or {}).get("motd_path") or "")
        if not path:
            return b""
        try:
            with open(os.path.expanduser(path), encoding="utf-8", errors="replace") as f:
                return motd_bytes(f.read())
        except FileNotFoundError:
            return b""
        except OSError as e:
            self.server.log.warning("cannot show the MOTD", path=path, error=str(e))
            return b""

    async def _run(self, stdin: asyncssh.SSHReader[bytes], stdout: asyncssh.SSHWriter[bytes],
                   stderr: asyncssh.SSHWriter[bytes]) -> None:
        chan = self._channel()
        command = chan.get_command()
        user = login_user(self._penv())
        done = asyncio.Event()
        self.command_running = True
        self.server._running.add(done)
        counted = self.kind if self.kind != "jetbrains" else ""  # see _JetBrainsForward
        self.server.count(counted, 1)
        result = SessionResult(255, "internal error")
        log = self.server.log.bind(session_id=self.id, session_type=self.kind)

        def send_exit(status: int) -> None:
            with contextlib.suppress(Exception):
                chan.exit(status)

        try:
            env = self._environment(chan)
            prio = self.server.priority
            result = await run_session(
                prio.wrap(session_argv(user.shell, command)), prio.env(env), self._directory(), stdin=stdin,
                stdout=stdout, stderr=stderr, events=_Control(), pty=self._pty, closed=self.closed, send_exit=send_exit,
                kill_grace=self.server.kill_grace, preamble=self._motd(command),
                on_spawn=lambda p: log.info("ssh session started", pid=p.pid, pty=self._pty is not None,
                                            login_shell=not command))
            log.info("ssh session ended", status=result.status, reason=result.reason)
        except Exception as e:  # no traceback: its locals hold the environment (the agent token)
            log.error("ssh session failed", error=f"{type(e).__name__}: {e}")
            result = SessionResult(255, f"internal error: {e}")
            send_exit(255)
        finally:
            self.server.count(counted, -1)
            self.command_running = False
            self._finish(result.status, result.reason)
            done.set()
            self.server._running.discard(done)

