"""The devserver's DERP relay: coderd's ``GET /derp`` and ``GET /derp/latency-check``.

What coderd (tailscale ``derphttp.Handler`` + ``derp.Server``, coder ``WithWebsocketSupport``)
does, kept here (coder-tailnet.md §4):

* ``/derp`` with ``Upgrade: DERP`` → ``101 Switching Protocols`` with ``Upgrade: DERP``,
  ``Connection: Upgrade``, ``Derp-Version: 2``, ``Derp-Public-Key: <hex>``; DERP bytes follow on
  the same connection (we take the connection over from aiohttp after the 101). With
  ``Upgrade: websocket`` the client must offer the subprotocol ``derp``; binary messages form
  one byte stream. Anything else → 426 "DERP requires connection upgrade".
  :attr:`DerpRelay.refuse_raw` answers the raw upgrade with 426 instead (a proxy that drops
  ``Upgrade: DERP``), so clients fall back to WebSocket.
* Login: ServerKey; ClientInfo within 10 s (opened with our key, else the connection is
  closed); ServerInfo ``{"version":2}``. One server key per relay (one per devserver).
* SendPacket → RecvPacket (src key + packet) to the client logged in with that key (the newest
  connection of a key wins); unknown destinations are dropped, and a disco message (``TS💬``…)
  to one is answered with PeerGone (reason 1, not here; Go also rate-limits these). When a
  client leaves, every peer it sent to gets PeerGone (reason 0). Ping → Pong. KeepAlive every
  :attr:`DerpRelay.keepalive` s (60) plus ≤5 s jitter.
* :meth:`DerpRelay.restart` sends Restarting (reconnect-in, try-for) and cuts every client, as a
  derper going down gracefully does; :meth:`DerpRelay.ping` pings a client and waits for its Pong.

Control route: ``POST /devserver/derp`` ``{"refuse_raw": bool, "keepalive": seconds}``;
``GET /devserver/derp`` lists logged-in client keys (hex) and counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import struct
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from ..tailnet import derp
from ..tailnet.derp import FrameType

if TYPE_CHECKING:
    from .app import DevServer

__all__ = ["DerpRelay", "install", "relay"]

LOGIN_TIMEOUT = 10.0
DISCO_MAGIC = "TS💬".encode()
_RECV_HEADER = struct.Struct(">BI")
WRITE_BUFFER_LIMIT = 4 << 20  # a client this far behind is cut, as Go's write timeout would


@dataclass(eq=False)
class _Client:
    relay: DerpRelay
    transport_name: str  # "upgrade" or "websocket"
    _write: Callable[[bytes], None]
    _close: Callable[[], None]
    key: bytes = b""
    preferred: bool = False
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: derp.FrameReader = field(default_factory=lambda: derp.FrameReader(max_payload=derp.MAX_CLIENT_INFO))
    _keepalive: asyncio.Task[None] | None = None
    _login_timer: asyncio.TimerHandle | None = None

    def write(self, data: bytes) -> None:
        if not self.closed.is_set():
            self._write(data)

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self._close()
            self.relay._gone(self)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.write(derp.build_server_key(self.relay.public_key))
        self._login_timer = loop.call_later(LOGIN_TIMEOUT, self._login_expired)

    def _login_expired(self) -> None:
        if not self.key:
            self.close()

    def feed(self, data: bytes) -> None:
        try:
            for ftype, payload in self.reader.feed(data):
                self._frame(ftype, payload)
                if self.closed.is_set():
                    return
        except derp.DerpProtocolError:
            self.close()

    def _frame(self, ftype: int, payload: bytes) -> None:
        r = self.relay
        if not self.key:
            if ftype != FrameType.CLIENT_INFO:
                self.close()
                return
            client, _info = derp.open_client_info(r.private_key, payload)
            self.key = client
            self.reader.max_payload = derp.MAX_FRAME_PAYLOAD
            if self._login_timer is not None:
                self._login_timer.cancel()
            self.write(derp.build_server_info(r.private_key, client, os.urandom(derp.NONCE_LEN)))
            r._register(self)
            self._keepalive = asyncio.get_running_loop().create_task(self._keepalives())
            return
        if ftype == FrameType.SEND_PACKET:
            if len(payload) >= derp.KEY_LEN:
                r._relay(self, payload[:derp.KEY_LEN], payload[derp.KEY_LEN:])
        elif ftype == FrameType.PING:
            if len(payload) >= 8:
                self.write(derp.encode_frame(FrameType.PONG, payload[:8]))
        elif ftype == FrameType.PONG:
            waiter = r._pings.pop(payload[:8], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif ftype == FrameType.NOTE_PREFERRED:
            self.preferred = payload[:1] == b"\x01"
            r.preferred_notes.append((self.key, self.preferred))
        # everything else (mesh frames, a second ClientInfo) is ignored

    async def _keepalives(self) -> None:
        while not self.closed.is_set():
            await asyncio.sleep(self.relay.keepalive + random.uniform(0, self.relay.keepalive_jitter))  # noqa: S311
            self.write(derp.encode_frame(FrameType.KEEP_ALIVE))

    def stop_tasks(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._login_timer is not None:
            self._login_timer.cancel()


class _Parser:
    """aiohttp's hook for the bytes of an upgraded connection (the shape of its WebSocketReader)."""

    def __init__(self, client: _Client) -> None:
        self.client = client

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.client.feed(bytes(data))
        return self.client.closed.is_set(), b""

    def feed_eof(self) -> None:
        self.client.close()


class DerpRelay:
    """A DERP server core for the devserver. Counters and records are for tests."""

    def __init__(self) -> None:
        from nacl.public import PrivateKey

        sk = PrivateKey.generate()
        self.private_key = bytes(sk)
        self.public_key = bytes(sk.public_key)
        self.refuse_raw = False
        self.keepalive = 60.0
        self.keepalive_jitter = 5.0
        self.clients: dict[bytes, _Client] = {}
        self.connections: list[_Client] = []
        self._sent_to: dict[bytes, dict[bytes, _Client]] = {}
        self._pings: dict[bytes, asyncio.Future[None]] = {}
        self.upgrades: list[dict[str, Any]] = []  # {"style", "headers"} of every /derp request
        self.preferred_notes: list[tuple[bytes, bool]] = []
        self.packets = 0
        self.dropped = 0
        self.changed = asyncio.Event()

    # -- the relay core --

    def _register(self, c: _Client) -> None:
        self.clients[c.key] = c
        self._notify()

    def _gone(self, c: _Client) -> None:
        c.stop_tasks()
        if c in self.connections:
            self.connections.remove(c)
        if c.key and self.clients.get(c.key) is c:
            del self.clients[c.key]
            for dst_key, dst in self._sent_to.pop(c.key, {}).items():
                if self.clients.get(dst_key) is dst:
                    dst.write(derp.encode_frame(FrameType.PEER_GONE, c.key + bytes([derp.PeerGoneReason.DISCONNECTED])))
        self._notify()

    def _relay(self, src: _Client, dst_key: bytes, packet: bytes) -> None:
        dst = self.clients.get(dst_key)
        if dst is None or len(packet) > derp.MAX_PACKET_SIZE:
            self.dropped += 1
            if dst is None and packet.startswith(DISCO_MAGIC):  # Go answers only disco this way
                src.write(derp.encode_frame(FrameType.PEER_GONE, dst_key + bytes([derp.PeerGoneReason.NOT_HERE])))
            return
        self._sent_to.setdefault(src.key, {})[dst_key] = dst
        self.packets += 1
        dst.write(b"".join((_RECV_HEADER.pack(FrameType.RECV_PACKET, derp.KEY_LEN + len(packet)), src.key, packet)))

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await self.changed.wait()

    # -- controls for tests --

    async def ping(self, key: bytes, timeout: float = 10.0) -> None:
        """Ping the client logged in as ``key`` and wait for its Pong (TimeoutError if none)."""
        data = os.urandom(8)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[data] = waiter
        try:
            self.clients[key].write(derp.encode_frame(FrameType.PING, data))
            await asyncio.wait_for(waiter, timeout)
        finally:
            self._pings.pop(data, None)

    def send_health(self, key: bytes, problem: str) -> None:
        self.clients[key].write(derp.encode_frame(FrameType.HEALTH, problem.encode()))

    def restart(self, reconnect_in: float = 0.0, try_for: float = 0.0) -> None:
        """Tell every client the server restarts, then cut them all."""
        payload = int(reconnect_in * 1000).to_bytes(4, "big") + int(try_for * 1000).to_bytes(4, "big")
        for c in list(self.connections):
            c.write(derp.encode_frame(FrameType.RESTARTING, payload))
            c.close()

    def close_all(self) -> None:
        for c in list(self.connections):
            c.close()

    def summary(self) -> dict[str, Any]:
        return {"server_key": self.public_key.hex(), "clients": sorted(k.hex() for k in self.clients),
                "connections": len(self.connections), "packets": self.packets, "dropped": self.dropped,
                "refuse_raw": self.refuse_raw, "keepalive": self.keepalive}

    # -- HTTP --

    async def handle(self, request: web.Request) -> web.StreamResponse:
        upgrade = request.headers.get("Upgrade", "").lower()
        self.upgrades.append({"style": upgrade, "headers": dict(request.headers)})
        if upgrade == "websocket":
            return await self._websocket(request)
        if upgrade != "derp" or self.refuse_raw:
            return web.Response(status=426, text="DERP requires connection upgrade")
        return await self._raw(request)

    async def _raw(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=101, reason="Switching Protocols", headers={
            "Upgrade": "DERP", "Connection": "Upgrade", "Derp-Version": str(derp.PROTOCOL_VERSION),
            "Derp-Public-Key": self.public_key.hex()})
        await resp.prepare(request)
        transport = request.transport
        assert transport is not None
        protocol: Any = request.protocol

        out: list[bytes] = []

        def flush() -> None:
            data = b"".join(out)
            out.clear()
            if transport.is_closing():
                return
            if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
                client.close()
                return
            transport.write(data)

        def write(data: bytes) -> None:  # one send per event-loop turn
            if not out:
                asyncio.get_running_loop().call_soon(flush)
            out.append(data)

        def close() -> None:
            if out:
                flush()
            transport.close()  # sends what is buffered, then closes

        client = _Client(self, "upgrade", write, close)
        protocol.keep_alive(False)
        protocol.set_parser(_Parser(client))  # every later byte of this connection is DERP
        await self._serve(client)
        return resp

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("derp",), compress=False, autoping=True,
                                   max_msg_size=derp.MAX_SKIP_PAYLOAD)
        ready = ws.can_prepare(request)
        if not ready.ok or ready.protocol != "derp":
            await ws.prepare(request)
            await ws.close(code=1008, message=b"client must speak the derp subprotocol")
            return ws
        await ws.prepare(request)
        out: list[bytes] = []
        wake = asyncio.Event()

        def write(data: bytes) -> None:
            out.append(data)
            wake.set()

        def close() -> None:
            wake.set()

        client = _Client(self, "websocket", write, close)

        async def sender() -> None:
            while True:
                await wake.wait()
                wake.clear()
                if out:
                    data = b"".join(out)
                    out.clear()
                    await ws.send_bytes(data)
                if client.closed.is_set():
                    await ws.close()
                    return

        async def receiver() -> None:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    client.feed(msg.data)
                elif msg.type in (WSMsgType.TEXT,):
                    client.close()
                if client.closed.is_set():
                    return
            client.close()

        send_task = asyncio.ensure_future(sender())
        recv_task = asyncio.ensure_future(receiver())
        try:
            await self._serve(client)
        finally:
            recv_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                await asyncio.wait_for(send_task, 1.0)
            send_task.cancel()
            with contextlib.suppress(BaseException):
                await recv_task
        return ws

    async def _serve(self, client: _Client) -> None:
        self.connections.append(client)
        client.start()
        try:
            await client.closed.wait()
        finally:
            client.close()


_RELAYS: weakref.WeakKeyDictionary[DevServer, DerpRelay] = weakref.WeakKeyDictionary()


def relay(ds: DevServer) -> DerpRelay:
    """The DERP relay of ``ds`` (created on first use)."""
    r = _RELAYS.get(ds)
    if r is None:
        r = DerpRelay()
        _RELAYS[ds] = r
    return r


def install(app: web.Application, ds: DevServer) -> None:
    from .app import coder_error

    r = relay(ds)

    async def latency_check(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ctl_get(request: web.Request) -> web.Response:
        return web.json_response(r.summary())

    async def ctl_post(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return coder_error(400, "Request body must be valid JSON.")
        if "refuse_raw" in body:
            if not isinstance(body["refuse_raw"], bool):
                return coder_error(400, "Validation failed.", validations=[{"field": "refuse_raw", "detail": "bool"}])
            r.refuse_raw = body["refuse_raw"]
        if "keepalive" in body:
            ka = body["keepalive"]
            if isinstance(ka, bool) or not isinstance(ka, int | float) or ka <= 0:
                return coder_error(400, "Validation failed.", validations=[{"field": "keepalive", "detail": "> 0"}])
            r.keepalive = float(ka)
        return web.json_response(r.summary())

    async def on_shutdown(app: web.Application) -> None:
        r.close_all()

    app.router.add_get("/derp", r.handle)
    app.router.add_get("/derp/latency-check", latency_check)
    app.router.add_get("/devserver/derp", ctl_get)
    app.router.add_post("/devserver/derp", ctl_post)
    app.on_shutdown.append(on_shutdown)
