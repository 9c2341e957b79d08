"""DERP over the network: dialing a region, one connection per region, the home region.

The protocol is :mod:`.derp` (sans-I/O); the map and choices are :mod:`.derpmap`. Rules here
(coder-tailnet.md §4; coder/tailscale ``derphttp_client.go``, ``derphttp/websocket.go``):

* Dial: TCP to the node (``ipv4`` or ``host_name``, ``derp_port`` or 443/80), TLS unless
  ``force_http`` — verified exactly like every other coderd request: ``tls_ca_file`` when set,
  no verification when ``tls_insecure`` (or the node is ``insecure_for_tests``), ALPN
  ``http/1.1`` only. Then ``GET /derp`` with ``Upgrade: DERP``, ``Connection: Upgrade`` and the
  agent's extra headers; a ``101`` hands the connection to DERP.
* A 4xx answer to the upgrade (a proxy that will not pass ``Upgrade: DERP``) switches that region
  to WebSocket for the rest of the process, at once; ``derp_force_websockets`` uses WebSocket
  from the start: same URL (ws/wss), subprotocol ``derp``, no compression, binary messages
  forming one byte stream.
* Proxies: the environment's ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` (by the node URL's
  scheme) and ``NO_PROXY``, read by :func:`urllib.request.getproxies`/``proxy_bypass`` as httpx
  (the REST client) and websockets (the agent RPC) read them. The raw upgrade goes through the
  proxy with ``CONNECT host:port`` (``Proxy-Authorization: Basic`` from the proxy URL's
  user:password), then TLS to the node inside the tunnel; WebSocket dials use the websockets
  library's own proxy support, latency checks httpx's. (Go's WebSocket DERP dial ignores proxies;
  we do not, so the agent reaches coderd's relay the same way it reaches coderd.)
* Dial + upgrade + login must finish within ``DialOptions.timeout`` (10 s, as Go).
* A connection logs in with the node key; the home connection sends NotePreferred(1) after
  every login. Pings from the server are answered by the core. Server KeepAlives are only read:
  the client sends nothing on its own. Its one timer is Go's 120 s read deadline (two missed
  server keepalives → the connection is dead), re-armed lazily from the time of the last read,
  so an idle connection wakes the loop at most once per 120 s and a busy one pays nothing per
  packet.
* Failures reconnect with :data:`~coder_agent.retry.CONNECT` backoff. Restarting(reconnect-in,
  try-for) from the server: the schedule is reset, the first redial waits reconnect-in, and
  redials inside the try-for window start again from the policy's shortest delay. (Go's
  magicsock only reads the frame; derper sends it when it goes down gracefully, so honouring the
  advice just makes the redial after a relay restart prompt.)
* Packets are datagrams: :meth:`RegionConnection.send` never blocks; while a region is
  (re)connecting up to 32 packets wait (Go's ``bufferedDerpWritesBeforeDrop``), beyond that, or
  when the socket's send buffer is over 4 MiB, packets are dropped and counted.
* :meth:`DerpManager.update_home` probes every usable region (``/derp/latency-check``), adds the
  result to the report history (:class:`~.derpmap.LatencyReports`: Go's 5 min "best recent"
  latencies and the hysteresis that keeps the previous home) and moves home if it chose another
  region. When the home region's connection is lost and the redial fails (or a newly chosen home
  cannot be dialled), ``on_home_unreachable(region_id)`` is called once (again only after the
  home connected again or changed), so the owner can probe at once — Go re-runs netcheck on a
  DERP receive error (``ReSTUN("derp-recv-error")``); there the dead region does not answer, so
  the best reachable one wins.
* :class:`DerpManager` keeps the home connection and opens others on demand for peers whose
  home region differs; those are closed once a 60 s check finds no traffic since the previous
  check (so 60–120 s after the last packet; Go's ``derpInactiveCleanupTime`` is 60 s). The check
  timer exists only while such a connection does.
* One log line per state change (connected, lost, upgrade refused, server health, restarting),
  repeated failures collapsed; never per packet; keys and header values are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import unquote, urlsplit

from .. import __version__
from ..clock import Clock, SystemClock
from ..errors import ApiError, ProtocolError, TransportError
from ..log import Collapse, get_logger
from ..retry import CONNECT, Backoff, RetryPolicy
from . import derp, derpmap
from .derpmap import DerpMap, DerpNode, DerpRegion

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

__all__ = [
    "DerpManager",
    "DialOptions",
    "RegionConnection",
    "UpgradeRefused",
    "dial",
    "measure_latency",
    "ssl_context",
]

READ_CHUNK: Final = 256 << 10
READ_IDLE_TIMEOUT: Final = 120.0
MAX_PENDING: Final = 32
SEND_BUFFER_LIMIT: Final = 4 << 20
IDLE_REGION_TIMEOUT: Final = 60.0
MAX_ERROR_BODY: Final = 4096

PacketHandler = Callable[[int, bytes, bytes], None]  # (region id, source key, payload)
PeerGoneHandler = Callable[[int, bytes, int], None]  # (region id, peer key, reason)
RegionHandler = Callable[[int], None]  # (region id)


@dataclass(frozen=True)
class DialOptions:
    """How to reach DERP nodes: the same TLS and header settings as every other coderd request."""

    headers: Mapping[str, str] = field(default_factory=dict)
    tls_ca_file: str | None = None
    tls_insecure: bool = False
    force_websockets: bool = False
    timeout: float = 10.0
    # scheme ("http", "https", "all", "no") → URL, as urllib.request.getproxies(); None = the environment
    proxies: Mapping[str, str] | None = None

    @classmethod
    def from_settings(cls, settings: Any, *, force_websockets: bool = False) -> DialOptions:
        """From the daemon's :class:`~coder_agent.config.Settings` (extra headers, TLS settings)."""
        return cls(headers={k: v.get_secret_value() for k, v in settings.headers.items()},
                   tls_ca_file=str(settings.tls_ca_file) if settings.tls_ca_file else None,
                   tls_insecure=bool(settings.tls_insecure), force_websockets=force_websockets)


def ssl_context(opts: DialOptions, *, insecure: bool = False) -> ssl.SSLContext:
    """A client context verifying as the agent RPC connection does (``tls_ca_file`` loaded,
    ``tls_insecure`` turns verification off); HTTP/1.1 only (h2 would break the Upgrade)."""
    ctx = ssl.create_default_context(cafile=opts.tls_ca_file)
    if opts.tls_insecure or insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class UpgradeRefused(ApiError):
    """The server (or a proxy) answered the DERP upgrade with ``status`` instead of 101."""


class Stream(Protocol):
    """A DERP byte stream: raw (after the 101) or WebSocket binary messages."""

    transport_name: str

    async def read(self) -> bytes:
        """The next bytes; ``b""`` at the end of the stream."""
        ...

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False (nothing queued) when the send buffer is over its limit."""
        ...

    def close(self) -> None: ...


class _RawStream:
    """Writes made in one event-loop turn leave in one ``send`` (a packet burst costs one syscall)."""

    transport_name = "upgrade"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._out: list[bytes] = []
        self._pending = 0

    async def read(self) -> bytes:
        try:
            return await self._reader.read(READ_CHUNK)
        except (ConnectionError, ssl.SSLError):
            return b""

    def write(self, data: bytes) -> bool:
        transport = self._writer.transport
        if transport.is_closing() or transport.get_write_buffer_size() + self._pending > SEND_BUFFER_LIMIT:
            return False
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(data)
        self._pending += len(data)
        return True

    def _flush(self) -> None:
        data = b"".join(self._out)
        self._out.clear()
        self._pending = 0
        if not self._writer.transport.is_closing():
            self._writer.write(data)

    def close(self) -> None:
        if self._out:
            self._flush()
        self._writer.close()


class _WsStream:
    transport_name = "websocket"

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._out: list[bytes] = []
        self._pending = 0
        self._wake = asyncio.Event()
        self._sender = asyncio.ensure_future(self._send_loop())

    async def read(self) -> bytes:
        import websockets

        while True:
            try:
                msg = await self._ws.recv()
            except websockets.exceptions.ConnectionClosed:
                return b""
            if isinstance(msg, str):
                raise ProtocolError("DERP over WebSocket: a text message")
            if msg:  # an empty message is not the end of the stream
                return bytes(msg)

    def write(self, data: bytes) -> bool:
        if self._pending > SEND_BUFFER_LIMIT or self._sender.done():
            return False
        self._out.append(data)
        self._pending += len(data)
        self._wake.set()
        return True

    async def _send_loop(self) -> None:
        import websockets

        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                data = b"".join(self._out)
                self._out.clear()
                self._pending = 0
                if data:
                    await self._ws.send(data)
        except websockets.exceptions.ConnectionClosed:
            pass  # the reader sees the end of the stream too

    def close(self) -> None:
        self._sender.cancel()
        _background(self._ws.close())


_BACKGROUND: set[asyncio.Future[Any]] = set()


def _background(aw: Any) -> None:
    """Run a closing coroutine without waiting for it (kept referenced until done)."""
    fut = asyncio.ensure_future(aw)
    _BACKGROUND.add(fut)
    fut.add_done_callback(_BACKGROUND.discard)


# ---- dialing ------------------------------------------------------------------------------------


def _proxy_for(scheme: str, host: str, opts: DialOptions) -> str | None:
    proxies = dict(opts.proxies) if opts.proxies is not None else urllib.request.getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy:
        return None
    if opts.proxies is None:
        if urllib.request.proxy_bypass(host):
            return None
    elif _bypassed(host, proxies.get("no", "")):
        return None
    return proxy


def _bypassed(host: str, no_proxy: str) -> bool:
    host = host.lower().strip("[]")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*" or host == entry.lstrip(".") or host.endswith("." + entry.lstrip(".")):
            return True
    return False


def _check_header(name: str, value: str) -> None:
    if any(c in name + value for c in "\r\n\0") or not name:
        raise ValueError("an extra header has a control character in its name or value")


async def _open_tcp(node: DerpNode, opts: DialOptions) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    t = derpmap.dial_target(node)
    scheme = "https" if t.tls else "http"
    ctx = ssl_context(opts, insecure=t.insecure) if t.tls else None
    proxy = _proxy_for(scheme, t.server_name or t.host, opts)
    if proxy is None:
        return await asyncio.open_connection(t.host, t.port, ssl=ctx, server_hostname=t.server_name if ctx else None)
    pu = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    proxy_ctx = ssl_context(DialOptions()) if pu.scheme == "https" else None
    reader, writer = await asyncio.open_connection(
        pu.hostname, pu.port or (443 if pu.scheme == "https" else 80), ssl=proxy_ctx,
        server_hostname=pu.hostname if proxy_ctx else None)
    try:
        target = f"[{t.host}]:{t.port}" if ":" in t.host else f"{t.host}:{t.port}"
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
        if pu.username is not None:
            cred = f"{unquote(pu.username)}:{unquote(pu.password or '')}".encode()
            lines.append("Proxy-Authorization: Basic " + base64.b64encode(cred).decode())
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, _ = _parse_head(await reader.readuntil(b"\r\n\r\n"))
        if status != 200:
            raise TransportError("connect", f"the proxy refused CONNECT to the DERP node ({status})")
        if ctx is not None:
            await writer.start_tls(ctx, server_hostname=t.server_name)
    except BaseException:
        writer.close()
        raise
    return reader, writer


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProtocolError("DERP upgrade: not an HTTP response")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers


async def _dial_raw(node: DerpNode, opts: DialOptions) -> _RawStream:
    reader, writer = await _open_tcp(node, opts)
    try:
        url = urlsplit(derpmap.node_url(node))
        lines = [f"GET {url.path} HTTP/1.1", f"Host: {url.netloc}", f"User-Agent: coder-agent/{__version__}"]
        for k, v in opts.headers.items():
            _check_header(k, v)
            if k.lower() not in ("host", "upgrade", "connection"):
                lines.append(f"{k}: {v}")
        lines += ["Upgrade: DERP", "Connection: Upgrade"]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
        if status != 101:
            body = b""
            with contextlib.suppress(Exception):
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(min(length, MAX_ERROR_BODY))
            text = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
            raise UpgradeRefused(status, text.splitlines()[0][:200], method="GET", path="/derp")
    except BaseException:
        writer.close()
        raise
    return _RawStream(reader, writer)


async def _dial_ws(node: DerpNode, opts: DialOptions) -> _WsStream:
    import websockets
    from websockets.asyncio.client import connect

    t = derpmap.dial_target(node)
    url = derpmap.node_url(node).replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    kwargs: dict[str, Any] = {}
    if t.tls:
        kwargs["ssl"] = ssl_context(opts, insecure=t.insecure)
        kwargs["server_hostname"] = t.server_name
    if opts.proxies is not None:  # else websockets reads the environment, as for the agent RPC
        kwargs["proxy"] = _proxy_for("https" if t.tls else "http", t.server_name or t.host, opts)
    headers = dict(opts.headers)
    for k, v in headers.items():
        _check_header(k, v)
    try:
        ws = await connect(url, subprotocols=[websockets.Subprotocol("derp")], additional_headers=headers,
                           compression=None, origin=None, max_size=derp.MAX_SKIP_PAYLOAD, ping_interval=None,
                           open_timeout=None, user_agent_header=f"coder-agent/{__version__}", **kwargs)
    except websockets.exceptions.InvalidStatus as e:
        body = bytes(e.response.body or b"")[:200].decode("utf-8", "replace").strip()
        raise ApiError(e.response.status_code, body or f"HTTP {e.response.status_code}", method="GET",
                       path="/derp") from None
    if ws.subprotocol != "derp":
        await ws.close()
        raise ProtocolError("DERP over WebSocket: the server did not accept the derp subprotocol")
    return _WsStream(ws)


async def dial(node: DerpNode, opts: DialOptions, *, websocket: bool = False) -> Stream:
    """A DERP byte stream to ``node``. Raises UpgradeRefused (non-101), ApiError (WebSocket
    refused), TransportError (dns/connect/tls), ProtocolError, TimeoutError."""
    try:
        if websocket:
            return await _dial_ws(node, opts)
        return await _dial_raw(node, opts)
    except ssl.SSLError as e:
        raise TransportError("tls", str(e), url=derpmap.node_url(node)) from None
    except OSError as e:
        raise TransportError("connect", e.strerror or str(e), url=derpmap.node_url(node)) from None
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise TransportError("read", "the DERP upgrade answer was cut short", url=derpmap.node_url(node)) from None


async def measure_latency(node: DerpNode, opts: DialOptions, clock: Clock | None = None) -> float:
    """Seconds taken by ``GET /derp/latency-check`` on an open connection (httpx, same TLS and
    proxy rules). Go times the request after its TLS dial, so connection set-up is excluded
    here too: a first request opens the connection, the second is timed. Any status ≥ 300 is an
    error (a proxy answering for the relay)."""
    import httpx

    clock = clock or SystemClock()
    t = derpmap.dial_target(node)
    url = derpmap.latency_check_url(node)
    kwargs: dict[str, Any] = {}
    if opts.proxies is not None:
        kwargs["trust_env"] = False
        proxy = _proxy_for("https" if t.tls else "http", t.server_name or t.host, opts)
        if proxy:
            kwargs["proxy"] = proxy
    async with httpx.AsyncClient(verify=ssl_context(opts, insecure=t.insecure), timeout=opts.timeout,
                                 headers={"User-Agent": f"coder-agent/{__version__}", **opts.headers},
                                 **kwargs) as client:
        elapsed = 0.0
        for _ in range(2):
            start = clock.monotonic()
            resp = await client.get(url)
            elapsed = clock.monotonic() - start
            if resp.status_code > 299:
                raise ApiError(resp.status_code, f"HTTP {resp.status_code}", method="GET",
                               path="/derp/latency-check")
    return max(elapsed, 1e-6)


# ---- one region ---------------------------------------------------------------------------------


class RegionConnection:
    """Keeps one DERP connection to a region up until :meth:`close`; see the module rules."""

    def __init__(self, region_id: int, get_region: Callable[[], DerpRegion | None], private_key: bytes,
                 opts: DialOptions, on_packet: PacketHandler, *, on_peer_gone: PeerGoneHandler | None = None,
                 preferred: bool = False, clock: Clock | None = None, policy: RetryPolicy = CONNECT,
                 read_timeout: float = READ_IDLE_TIMEOUT, on_dial_failed: RegionHandler | None = None) -> None:
        """``on_dial_failed(region_id)`` after every failed dial (not after the loss of an
        established connection: that is followed by a redial, which may fail)."""
        self.region_id = region_id
        self._on_dial_failed = on_dial_failed
        self.read_timeout = read_timeout
        self._get_region = get_region
        self._private = private_key
        self.opts = opts
        self._on_packet = on_packet
        self._on_peer_gone = on_peer_gone
        self.preferred = preferred
        self.clock = clock or SystemClock()
        self.backoff = Backoff(policy)
        self.log = get_logger("derp", region=region_id)
        self._collapse = Collapse(self.log)
        self.force_websockets = opts.force_websockets
        self.state = "idle"  # idle, connecting, connected, failing, closed
        self.transport_name = ""
        self.url = ""
        self.last_error: str | None = None
        self.health = ""
        self.connections = 0
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.used = False  # traffic since the idle check last looked
        self.connected = asyncio.Event()
        self._proto: derp.ClientProtocol | None = None
        self._stream: Stream | None = None
        self._pending: deque[tuple[bytes, bytes]] = deque()
        self._restart: derp.Restarting | None = None
        self._restart_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- public --

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def send(self, dst: bytes, payload: bytes) -> bool:
        """Send one packet (never blocks). False when it was dropped. ValueError if ``dst`` is not
        32 bytes or ``payload`` is over 64 KiB."""
        self.used = True
        proto, stream = self._proto, self._stream  # both set only while logged in
        if proto is None or stream is None:
            if len(self._pending) >= MAX_PENDING or self._closing:
                self.dropped += 1
                return False
            self._pending.append((dst, payload))
            return True
        proto.send_packet(dst, payload)
        if not stream.write(proto.data_to_send()):
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def set_preferred(self, preferred: bool) -> None:
        if preferred == self.preferred:
            return
        self.preferred = preferred
        proto, stream = self._proto, self._stream
        if proto is not None and stream is not None and proto.can_send:
            proto.note_preferred(preferred)
            stream.write(proto.data_to_send())

    async def close(self) -> None:
        self._closing = True
        if self._stream is not None:
            self._stream.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._set_state("closed")

    def status(self) -> dict[str, Any]:
        return {"region_id": self.region_id, "state": self.state, "preferred": self.preferred,
                "transport": self.transport_name, "url": self.url, "last_error": self.last_error,
                "health": self.health, "connections": self.connections, "packets_sent": self.sent,
                "packets_received": self.received, "packets_dropped": self.dropped}

    # -- the loop --

    def _set_state(self, state: str) -> None:
        self.state = state
        if state == "connected":
            self.connected.set()
        else:
            self.connected.clear()

    async def _run(self) -> None:
        while not self._closing:
            region = self._get_region()
            node = region.derp_node if region is not None else None
            if node is None:
                self._failed(TransportError("connect", "the DERP map has no DERP node for this region"))
            else:
                self.url = derpmap.node_url(node)
                if self.state != "failing":
                    self._set_state("connecting")
                try:
                    await self._session(node)
                except asyncio.CancelledError:
                    raise
                except UpgradeRefused as e:
                    if 400 <= e.status < 500 and not self.force_websockets:
                        self.force_websockets = True
                        self.log.warning("DERP upgrade refused; using WebSocket for this region from now on",
                                         status=e.status, url=self.url)
                        continue
                    self._failed(e)
                except Exception as e:
                    self._failed(e)
            if self._closing:
                return
            await self.clock.sleep(self._next_delay())

    def _next_delay(self) -> float:
        restart, self._restart = self._restart, None
        if restart is not None:
            self.backoff.reset()
            self._restart_until = self.clock.monotonic() + restart.reconnect_in + restart.try_for
            return restart.reconnect_in
        if self.clock.monotonic() < self._restart_until:
            self.backoff.reset()  # inside the server's try-for window: keep retrying quickly
        return self.backoff.next_delay()

    def _failed(self, e: BaseException) -> None:
        text = str(e) or type(e).__name__
        self.last_error = text
        was = self.state
        self._set_state("failing")
        if was == "connected":
            self._collapse = Collapse(self.log)
            if self._restart is not None:
                return  # "DERP server restarting" already said why the connection ends
        self._collapse.error("DERP connection failed; retrying", text, error=text, url=self.url)
        if was != "connected" and self._on_dial_failed is not None:
            self._on_dial_failed(self.region_id)

    async def _session(self, node: DerpNode) -> None:
        proto = derp.ClientProtocol(self._private)
        async with asyncio.timeout(self.opts.timeout):
            stream = await dial(node, self.opts, websocket=self.force_websockets)
            try:
                while not proto.logged_in:
                    data = await stream.read()
                    if not data:
                        raise TransportError("read", "the DERP server closed the connection during login",
                                             url=self.url)
                    events = proto.receive_data(data)
                    out = proto.data_to_send()
                    if out:
                        stream.write(out)
                    if proto.logged_in:
                        self._logged_in(proto, stream)
                    self._handle(events)
            except BaseException:
                stream.close()
                raise
        try:
            await self._read_loop(proto, stream)
        finally:
            self._proto = None
            self._stream = None
            stream.close()

    def _logged_in(self, proto: derp.ClientProtocol, stream: Stream) -> None:
        self._proto, self._stream = proto, stream
        self.transport_name = stream.transport_name
        self.connections += 1
        self.last_error = None
        if self.preferred:
            proto.note_preferred(True)
        while self._pending:
            dst, payload = self._pending.popleft()
            proto.send_packet(dst, payload)
            self.sent += 1
        out = proto.data_to_send()
        if out:
            stream.write(out)
        failures = self.backoff.attempts
        self._set_state("connected")
        self.backoff.success(self.clock.monotonic())
        self._collapse = Collapse(self.log)
        self.log.info("DERP connected", url=self.url, transport=self.transport_name, home=self.preferred,
                      connection=self.connections, after_failures=failures)

    async def _read_loop(self, proto: derp.ClientProtocol, stream: Stream) -> None:
        loop = asyncio.get_running_loop()
        last_read = loop.time()
        reader = asyncio.ensure_future(stream.read())
        dead = loop.create_future()
        handle: asyncio.TimerHandle | None = None

        def watchdog() -> None:
            nonlocal handle
            due = last_read + self.read_timeout
            if loop.time() >= due:
                if not dead.done():
                    dead.set_result(None)
            else:
                handle = loop.call_at(due, watchdog)

        handle = loop.call_at(last_read + self.read_timeout, watchdog)
        try:
            while True:
                done, _ = await asyncio.wait({reader, dead}, return_when=asyncio.FIRST_COMPLETED)
                if dead in done:
                    raise TransportError("read", f"nothing from the DERP server for {self.read_timeout:g} s",
                                         url=self.url)
                data = reader.result()
                if not data:
                    raise TransportError("read", "the DERP server closed the connection", url=self.url)
                last_read = loop.time()
                reader = asyncio.ensure_future(stream.read())
                events = proto.receive_data(data)
                out = proto.data_to_send()
                if out:
                    stream.write(out)
                self._handle(events)
                self.backoff.success(self.clock.monotonic())
        except derp.DerpProtocolError as e:
            raise ProtocolError(f"DERP: {e}") from None
        finally:
            if handle is not None:
                handle.cancel()
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    def _handle(self, events: list[derp.Event]) -> None:
        for ev in events:
            if isinstance(ev, derp.RecvPacket):
                self.received += 1
                self.used = True
                self._on_packet(self.region_id, ev.src, ev.data)
            elif isinstance(ev, derp.PeerGone):
                if self._on_peer_gone is not None:
                    self._on_peer_gone(self.region_id, ev.peer, ev.reason)
            elif isinstance(ev, derp.Health):
                if ev.problem != self.health:
                    self.health = ev.problem
                    if ev.problem:
                        self.log.warning("DERP server reports a problem", problem=ev.problem)
                    else:
                        self.log.info("DERP server reports healthy again")
            elif isinstance(ev, derp.Restarting):
                self._restart = ev
                self.log.info("DERP server restarting", reconnect_in=ev.reconnect_in, try_for=ev.try_for)


# ---- the manager ----------------------------------------------------------------------------------


class DerpManager:
    """The home DERP connection plus one per other region in use.

    ``on_packet(region_id, src_key, payload)`` is called for every received packet (in the event
    loop, must not block); ``on_home_unreachable(region_id)`` when the home region cannot be
    dialled (see the module rules). Call :meth:`set_map` whenever the DERP map changes (already
    rewritten with :func:`~.derpmap.rewrite_default_relay`), then :meth:`update_home` (probe +
    choose) or :meth:`set_home`.
    """

    def __init__(self, private_key: bytes, opts: DialOptions, on_packet: PacketHandler, *,
                 on_peer_gone: PeerGoneHandler | None = None, clock: Clock | None = None,
                 seed: int | None = None, policy: RetryPolicy = CONNECT,
                 idle_timeout: float = IDLE_REGION_TIMEOUT, read_timeout: float = READ_IDLE_TIMEOUT,
                 report_max_age: float = derpmap.REPORT_MAX_AGE,
                 on_home_unreachable: RegionHandler | None = None) -> None:
        self._private = private_key
        self.opts = opts
        self._on_packet = on_packet
        self._on_peer_gone = on_peer_gone
        self.clock = clock or SystemClock()
        self.policy = policy
        self.idle_timeout = idle_timeout
        self.read_timeout = read_timeout
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(8), "big")
        self.derp_map = DerpMap()
        self.home = 0
        self.latencies: dict[int, float] = {}
        self.reports = derpmap.LatencyReports(report_max_age)
        self.on_home_unreachable = on_home_unreachable
        self._unreachable_reported: tuple[int, int] | None = None  # (home, its connections) when said
        self.regions: dict[int, RegionConnection] = {}
        self._idle: dict[int, asyncio.TimerHandle] = {}
        self.log = get_logger("derp")

    def set_map(self, derp_map: DerpMap) -> None:
        self.derp_map = derp_map
        for rid in [r for r in self.regions if r not in derp_map.regions or not derp_map.regions[r].has_derp]:
            self._drop(rid)
        if self.home and self.home not in self.regions:
            self.home = 0

    def set_home(self, region_id: int) -> None:
        if region_id == self.home:
            return
        old, self.home = self.home, region_id
        self._unreachable_reported = None
        if old in self.regions:
            self.regions[old].set_preferred(False)
            self._schedule_idle(old)
        if region_id:
            conn = self._ensure(region_id)
            conn.set_preferred(True)
        self.log.info("DERP home region", region=region_id, previous=old)

    async def update_home(self) -> int:
        """Probe every usable region's latency, choose the home (Go's rules, with the report
        history), connect to it."""
        self.latencies = await self.probe()
        home = self.reports.add(self.derp_map, self.latencies, self.clock.monotonic()) or \
            derpmap.fallback_region(self.derp_map, self.home, self.seed)
        self.set_home(home)
        return home

    async def probe(self) -> dict[int, float]:
        """Latency (seconds) of each non-avoided DERP region that answered its latency check."""
        regions = [r for r in self.derp_map.regions.values() if r.has_derp and not r.avoid]

        async def one(r: DerpRegion) -> tuple[int, float | None]:
            node = r.derp_node
            assert node is not None
            try:
                return r.region_id, await measure_latency(node, self.opts, self.clock)
            except Exception:  # an unreachable region is just not a candidate
                return r.region_id, None

        results = await asyncio.gather(*(one(r) for r in regions))
        return {rid: d for rid, d in results if d is not None}

    def send(self, region_id: int, dst: bytes, payload: bytes) -> bool:
        """Send ``payload`` to ``dst`` via ``region_id`` (0 = home). False when dropped."""
        rid = region_id or self.home
        if not rid or rid not in self.derp_map.regions:
            return False
        conn = self._ensure(rid)
        if rid != self.home:
            self._schedule_idle(rid)
        return conn.send(dst, payload)

    def derp_latency(self) -> dict[str, float]:
        return derpmap.derp_latency(self.latencies)

    def status(self) -> dict[str, Any]:
        return {"home": self.home, "latency": self.derp_latency(),
                "regions": {rid: c.status() for rid, c in sorted(self.regions.items())}}

    async def close(self) -> None:
        for h in self._idle.values():
            h.cancel()
        self._idle.clear()
        conns = list(self.regions.values())
        self.regions.clear()
        for c in conns:
            await c.close()

    # -- internals --

    def _ensure(self, rid: int) -> RegionConnection:
        conn = self.regions.get(rid)
        if conn is None:
            conn = RegionConnection(rid, lambda: self.derp_map.regions.get(rid), self._private, self.opts,
                                    self._on_packet, on_peer_gone=self._on_peer_gone,
                                    preferred=rid == self.home, clock=self.clock, policy=self.policy,
                                    read_timeout=self.read_timeout, on_dial_failed=self._dial_failed)
            self.regions[rid] = conn
            conn.start()
        return conn

    def _dial_failed(self, rid: int) -> None:
        conn = self.regions.get(rid)
        if rid != self.home or conn is None or self.on_home_unreachable is None:
            return
        mark = (rid, conn.connections)  # once per home and per connection it lost
        if mark == self._unreachable_reported:
            return
        self._unreachable_reported = mark
        self.on_home_unreachable(rid)

    def _drop(self, rid: int) -> None:
        conn = self.regions.pop(rid, None)
        h = self._idle.pop(rid, None)
        if h is not None:
            h.cancel()
        if conn is not None:
            _background(conn.close())

    def _schedule_idle(self, rid: int) -> None:
        if rid in self._idle or rid not in self.regions:
            return
        loop = asyncio.get_running_loop()

        def check() -> None:
            self._idle.pop(rid, None)
            conn = self.regions.get(rid)
            if conn is None or rid == self.home:
                return
            if conn.used:
                conn.used = False
                self._idle[rid] = loop.call_later(self.idle_timeout, check)
            else:
                self.log.info("closing idle DERP connection", region=rid)
                self._drop(rid)

        self._idle[rid] = loop.call_later(self.idle_timeout, check)
