"""The agent RPC connection: dial, keep alive, redial; typed unary calls on top.

Rules (coder-agent-rpc.md §1, §2.4, §6.17, §6.18):

* URL ``ws(s)://<agent-url>/api/v2/workspaceagents/me/rpc?version=2.N&role=agent``; header
  ``Coder-Session-Token`` (plus the operator's extra headers); no Origin, no subprotocol, no
  compression; the peer may send websocket messages up to 4 MiB.
* Version: we dial :data:`DIAL_VERSIONS` [0] (2.8 — the lowest API that has every RPC we call,
  ``UpdateAppStatus`` being the newest). A server older than that refuses the version with a
  400 before the upgrade; we then step down (2.3, then 2.0) at once and keep the lower version
  for the rest of the process. RPCs the server lacks answer "unknown rpc" / code 12: the
  caller gets :class:`~coder_agent.errors.FeatureUnavailable`, it is logged once per process and
  not called again on that connection.
* Every failure is retried with :data:`~coder_agent.retry.CONNECT` backoff (0.1 s … 10 s,
  jittered; reset only after a connection that lasted); never a tight loop, never an exit
  (coderd answers 401 until the build finishes). The token is refreshed (file re-read, instance
  identity re-exchanged) before the dial that follows a 401/403 and before every redial after a
  session ended; dns/connect/5xx failures keep it, so an outage does not hammer a cloud metadata
  service. SIGHUP (``wait_retry_now``) skips the wait. When no token can be obtained at all
  (:class:`~coder_agent.errors.NotAuthenticated`) the token provider has reported why; this loop
  says only "waiting for authentication" (debug) and the state "auth: waiting for authentication".
* Liveness: the transport answers the server's yamux pings itself; we ping too, every
  ``ping_interval`` s (30 s: hashicorp/yamux's default keep-alive, which Go's agent uses; an idle
  daemon wakes for nothing more often), and a missing answer within ``ping_timeout`` s ends the
  connection.
* ``controlplane`` (transport "rpc") always says where we are; failures carry a staged
  diagnosis ``"<stage>: <reason>"`` with the stage one of auth, dns, connect, tls, timeout,
  http (coderd's own message), websocket, session.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

from google.protobuf.message import DecodeError, Message

from .. import __version__
from ..controlplane import ConnState
from ..errors import (
    ApiError,
    AuthError,
    CoderAgentError,
    FeatureUnavailable,
    NotAuthenticated,
    ProtocolError,
    TransportError,
)
from ..log import Collapse, get_logger
from ..retry import CONNECT, Backoff
from ..rpc import drpc
from ..rpc.transport import ConnectionClosedError, StreamResetError, YamuxConnection, unary_call, unary_call_pieces
from ..tasks import reap

if TYPE_CHECKING:
    from ..metrics import Metrics
    from .parts import AgentParts

__all__ = ["DIAL_VERSIONS", "RPC_PATH", "ConnectionLoop", "DeadPeerError", "RpcClient", "rpc_url"]

RPC_PATH: Final = "/api/v2/workspaceagents/me/rpc"
DIAL_VERSIONS: Final = ("2.8", "2.3", "2.0")
MAX_WS_MESSAGE: Final = 4 << 20
SERVICE: Final = "/coder.agent.v2.Agent/"

M = TypeVar("M", bound=Message)


class DeadPeerError(CoderAgentError):
    """The server stopped answering yamux pings."""


def rpc_url(base: str, version: str) -> str:
    """The websocket URL for ``base`` (http→ws, https→wss), keeping any path prefix."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = urlencode({"version": version, "role": "agent"})
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + RPC_PATH, query, ""))


class RpcClient:
    """Typed unary calls over one live connection.

    ``call`` raises :class:`FeatureUnavailable` for methods the server lacks (and for any
    later call of them on this connection), :class:`drpc.RpcError` for handler errors,
    :class:`TransportError` when the connection fails, TimeoutError after ``timeout``.
    """

    def __init__(self, conn: YamuxConnection, version: str, said_unavailable: set[str],
                 metrics: Metrics | None = None) -> None:
        self.conn = conn
        self.metrics = metrics
        self.version = version
        self.unavailable: set[str] = set()
        self._said = said_unavailable
        self.log = get_logger("agentrpc")

    @property
    def minor(self) -> int:
        return int(self.version.split(".")[1])

    async def call(self, method: str, request: Message, response_type: type[M], timeout: float = 30.0) -> M:
        return await self.call_encoded(method, request.SerializeToString(), response_type, timeout)

    async def call_encoded(self, method: str, request: bytes | bytearray | tuple[bytes, Iterator[bytes]],
                           response_type: type[M], timeout: float = 30.0) -> M:
        """:meth:`call` with the request already serialized, or given as pieces (first, rest) made
        as they are sent (a large request never held whole, see :mod:`coder_agent.agentrpc.logs`)."""
        if method in self.unavailable:
            raise FeatureUnavailable(f"{method} is not offered by this coderd")
        t0 = time.perf_counter()
        try:
            if isinstance(request, tuple):
                raw = await unary_call_pieces(self.conn, SERVICE + method, *request, timeout)
            else:
                raw = await unary_call(self.conn, SERVICE + method, request, timeout)
        except drpc.RpcUnimplemented as e:
            self.unavailable.add(method)
            if method not in self._said:
                self._said.add(method)
                self.log.warning("coderd does not offer this RPC; feature unavailable", method=method,
                                 code=e.code, error=e.message)
            raise FeatureUnavailable(f"{method} is not offered by this coderd") from None
        except (ConnectionClosedError, StreamResetError) as e:
            raise TransportError("session", str(e)) from None
        except drpc.DrpcProtocolError as e:
            raise ProtocolError(f"{method}: {e}") from None
        if self.metrics is not None:
            self.metrics.observe("rpc_call_seconds", time.perf_counter() - t0,
                                 "agent RPC unary calls answered by coderd: round-trip time", method=method)
        resp = response_type()
        try:
            resp.ParseFromString(raw)
        except DecodeError as e:
            raise ProtocolError(f"{method}: undecodable reply: {e}") from None
        return resp


def _ssl_context(parts: AgentParts) -> ssl.SSLContext:
    s = parts.settings
    ctx = ssl.create_default_context(cafile=str(s.tls_ca_file) if s.tls_ca_file else None)
    if s.tls_insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _http_error(status: int, body: bytes) -> ApiError:
    try:
        data: Any = json.loads(body) if body else None
    except ValueError:
        data = None
    return ApiError.from_body(status, data, method="GET", path=RPC_PATH)


def diagnosis(error: BaseException) -> str:
    """One line saying where it failed: TransportError text starts with its stage already."""
    if isinstance(error, TransportError):
        return str(error)
    return f"{stage_of(error)}: {error}"


def stage_of(error: BaseException) -> str:
    """The diagnosis stage of a dial or session failure."""
    if isinstance(error, ApiError):
        return "http"
    if isinstance(error, TransportError):
        return error.stage
    if isinstance(error, NotAuthenticated):
        return "auth"
    if isinstance(error, DeadPeerError):
        return "session"
    return "session"


class ConnectionLoop:
    """Keeps the RPC connection up and runs ``on_connect(client)`` on each connection.

    ``on_connect`` runs until the connection fails (it should raise) or until
    :meth:`close`; any exception it raises ends the connection and causes a redial.
    """

    def __init__(
        self,
        parts: AgentParts,
        on_connect: Callable[[RpcClient], Awaitable[None]],
        *,
        ping_interval: float = 30.0,  # hashicorp/yamux DefaultConfig().KeepAliveInterval, as Go's agent
        ping_timeout: float = 10.0,
        open_timeout: float = 20.0,
    ) -> None:
        self.parts = parts
        self.on_connect = on_connect
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.open_timeout = open_timeout
        self.backoff = Backoff(CONNECT)
        self.log = get_logger("agentrpc")
        self._collapse = Collapse(self.log)
        self._version_index = 0
        self._said_unavailable: set[str] = set()
        self.client: RpcClient | None = None
        self.connected = asyncio.Event()
        self.connections = 0
        self.last_disconnect: str | None = None
        self._closing = False
        self._current: asyncio.Future[None] | None = None
        self._closed = asyncio.Event()
        self._refused_since: float | None = None  # monotonic time of the first refusal in a row

    @property
    def version(self) -> str:
        return DIAL_VERSIONS[self._version_index]

    # ---- dialing -----------------------------------------------------------------------

    async def dial(self, token: str) -> YamuxConnection:
        """One attempt: websocket upgrade + yamux client. Raises ApiError / TransportError."""
        import websockets
        from websockets.asyncio.client import connect

        from ..rpc.websocket import RpcClientConnection

        s = self.parts.settings
        url = rpc_url(s.url, self.version)
        headers = {k: v.get_secret_value() for k, v in s.headers.items()}
        headers["Coder-Session-Token"] = token
        kwargs: dict[str, Any] = {}
        if url.startswith("wss:"):
            kwargs["ssl"] = _ssl_context(self.parts)
        try:
            ws = await connect(
                url, additional_headers=headers, compression=None, subprotocols=None, origin=None,
                max_size=MAX_WS_MESSAGE, ping_interval=None, open_timeout=self.open_timeout,
                user_agent_header=f"coder-agent/{__version__}", create_connection=RpcClientConnection, **kwargs,
            )
        except websockets.exceptions.InvalidStatus as e:
            raise _http_error(e.response.status_code, bytes(e.response.body or b"")) from None
        except socket.gaierror as e:
            raise TransportError("dns", f"cannot resolve host ({e.strerror or e})", url=s.url) from None
        except ssl.SSLError as e:  # same words as the REST client's diagnosis
            raise TransportError("tls", str(e), url=s.url) from None
        except TimeoutError:
            raise TransportError("timeout", f"no websocket upgrade within {self.open_timeout:g} s",
                                 url=s.url) from None
        except OSError as e:
            raise TransportError("connect", e.strerror or str(e), url=s.url) from None
        except websockets.exceptions.WebSocketException as e:
            raise TransportError("websocket", str(e), url=s.url) from None
        return YamuxConnection(ws, client=True)

    # ---- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, redial — until :meth:`close`. Never raises (but CancelledError)."""
        d = self.parts
        d.controlplane.transport = "rpc"
        refresh = False
        self.log.info("connecting to coderd", url=d.settings.url)  # progress a person at a terminal sees
        await d.wait_retry_now(0)  # a "retry now" from before we started is answered by this first dial
        while not self._closing:
            if d.controlplane.state is ConnState.FAILING:
                d.controlplane.attempts += 1  # keep showing the failure until something changes
            else:
                d.controlplane.set(ConnState.CONNECTING)
            try:
                conn = await self._unless_closed(self._connect(refresh))
                refresh = False
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if self._step_down(e):
                    continue
                # A refused token: get a fresh one (re-read the file, re-exchange the identity) for
                # the next try. Other failures keep it, so an outage does not hammer the metadata service.
                refused = isinstance(e, AuthError) or (isinstance(e, NotAuthenticated) and e.refused)
                refresh = isinstance(e, AuthError)
                if refused and self._refused_too_long():
                    return
                await self._failed(e, "cannot connect to coderd; retrying")
                continue
            self._refused_since = None
            if conn is None:  # close() came while we were getting a token or dialing
                break
            await self._serve(conn)
            refresh = True  # after a session ends, the next dial uses a freshly obtained token
            if not self._closing:
                await self._wait(self.backoff.next_delay())
        d.controlplane.set(ConnState.DISCONNECTED)

    async def _connect(self, refresh: bool) -> YamuxConnection:
        tokens = self.parts.tokens
        return await self.dial(await (tokens.refresh() if refresh else tokens.token()))

    async def _unless_closed(self, attempt: Awaitable[YamuxConnection]) -> YamuxConnection | None:
        """The attempt's connection (or its error), or None when :meth:`close` comes first: a stop
        never waits out a slow dial or a slow metadata service, and a connection that completed
        just as we closed is closed, not served."""
        work = asyncio.ensure_future(attempt)
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({work, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await reap(closed, None if work.done() else work)
        if work.cancelled():  # closed first: the attempt was abandoned
            return None
        conn = work.result()  # raises the attempt's error
        if self._closing:
            await conn.close()
            return None
        return conn

    def _step_down(self, e: BaseException) -> bool:
        if not (isinstance(e, ApiError) and e.status == 400 and self._version_index + 1 < len(DIAL_VERSIONS)):
            return False
        fields = {v.get("field") for v in e.validations}
        if "version" not in fields and "version" not in e.message.lower():
            return False
        old = self.version
        self._version_index += 1
        self.log.info("coderd refused our API version; dialing an older one", refused=old, next=self.version,
                      error=self.parts.redactor.scrub(str(e)))
        return True

    def _refused_too_long(self) -> bool:
        """Credentials refused: start (or check) the clock of auth_exit_after; True once it ran out
        and the daemon was told to exit (77) — a supervisor may restart it with fresh credentials."""
        d = self.parts
        now = d.clock.monotonic()
        if self._refused_since is None:
            self._refused_since = now
        limit = d.settings.auth_exit_after
        if not limit or now - self._refused_since < limit:
            return False
        d.controlplane.set(ConnState.FAILING, "credentials refused; exiting")
        d.auth_refused(f"coderd has refused the agent's credentials for {now - self._refused_since:.0f} s "
                               f"(CODER_AGENT_AUTH_EXIT_AFTER)")
        return True

    async def _failed(self, e: BaseException, event: str) -> None:
        text = self.parts.redactor.scrub(diagnosis(e))
        self.parts.controlplane.set(ConnState.FAILING, text)
        delay = self.backoff.next_delay()
        if isinstance(e, NotAuthenticated):  # the token provider logged the cause (once per change)
            self.log.debug("waiting for authentication", retry_in=round(delay, 3))
        else:
            self._collapse.error(event, text, error=text, url=self.parts.settings.url)
        await self._wait(delay)

    async def _wait(self, delay: float) -> None:
        if self._closing:
            return
        sleep = asyncio.ensure_future(self.parts.wait_retry_now(delay))
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({sleep, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await reap(sleep, closed)

    async def _serve(self, conn: YamuxConnection) -> None:
        d = self.parts
        self.connections += 1
        client = RpcClient(conn, self.version, self._said_unavailable, metrics=d.metrics)
        self.client = client
        d.controlplane.set(ConnState.CONNECTED)
        self.backoff.success(d.clock.monotonic())
        if self.connections == 1:  # the first success is always said once, even with no failure before it
            self._collapse = Collapse(self.log)
            self.log.info("coderd reachable", url=d.settings.url, api_version=self.version)
        else:
            self._collapse.ok("coderd reachable", url=d.settings.url)
            self.log.info("agent RPC reconnected", api_version=self.version, connection=self.connections)
        self.connected.set()
        session = asyncio.ensure_future(self.on_connect(client))
        watch = asyncio.ensure_future(self._watch(conn))
        # SIGHUP while connected: redial at once (e.g. to pick up a rotated token file).
        hup = asyncio.ensure_future(d.wait_retry_now(1e9))
        self._current = session
        error: BaseException | None = None
        try:
            waiters: set[asyncio.Future[Any]] = {session, watch, hup, conn.closed}
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if conn.closed in done:
                error = TransportError("session", f"connection lost: {conn.closed.result()}")
            elif hup in done:
                error = TransportError("session", "redial requested (SIGHUP)")
                self.backoff.retry_now()
            for t in (session, watch):
                if t in done and not t.cancelled() and t.exception() is not None and error is None:
                    error = t.exception()
        finally:
            self.connected.clear()
            self.client = None
            self._current = None
            await reap(session, watch, hup)
            await conn.close()
        self.backoff.success(d.clock.monotonic())
        if self._closing:
            return
        if error is None:
            error = TransportError("session", "connection ended")
        while isinstance(error, BaseExceptionGroup) and error.exceptions:  # say what actually failed
            error = error.exceptions[0]
        text = d.redactor.scrub(diagnosis(error))
        self.last_disconnect = text
        d.controlplane.set(ConnState.FAILING, text)
        self._collapse.error("agent RPC connection ended; redialing", text, error=text)

    async def _watch(self, conn: YamuxConnection) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                await conn.ping(self.ping_timeout)
            except TimeoutError:
                raise DeadPeerError(f"coderd did not answer a ping within {self.ping_timeout:g} s") from None

    async def close(self) -> None:
        """Stop redialing and end the current connection (the caller sent its last words)."""
        self._closing = True
        self._closed.set()
        if self._current is not None:
            self._current.cancel()
