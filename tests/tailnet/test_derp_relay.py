"""The DERP client against the devserver's relay on loopback: both upgrade styles, TLS, proxies,
PeerGone, pings, restarts."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from structlog.testing import capture_logs

from coder_agent.devserver import DevServer
from coder_agent.devserver.derp import DerpRelay, relay
from coder_agent.retry import RetryPolicy
from coder_agent.tailnet import derp, derpclient, derpmap
from coder_agent.tailnet.derpclient import DerpManager, DialOptions
from coder_agent.tailnet.derpmap import DerpMap, DerpNode, DerpRegion

from ..conftest import apoll, t
from ..security.test_tls import _self_signed

FAST = RetryPolicy(initial=0.05, cap=0.5, jitter=0.1)


def _map(url: str) -> DerpMap:
    """coderd's default map (embedded region 999 with a stale host), rewritten to ``url``."""
    node = DerpNode(name="999b", region_id=999, host_name="stale.invalid", derp_port=443, stun_port=-1)
    dm = DerpMap({999: DerpRegion(999, embedded_relay=True, region_code="coder", region_name="Coder Embedded Relay",
                                  nodes=(node,))})
    return derpmap.rewrite_default_relay(dm, url)


class Peer:
    """One DERP node: a key, a manager homed on 999, and what it received."""

    def __init__(self, url: str, opts: DialOptions) -> None:
        self.priv = os.urandom(32)
        self.pub = derp.public_key(self.priv)
        self.packets: asyncio.Queue[tuple[int, bytes, bytes]] = asyncio.Queue()
        self.gone: asyncio.Queue[tuple[int, bytes, int]] = asyncio.Queue()
        self.mgr = DerpManager(self.priv, opts, lambda r, s, p: self.packets.put_nowait((r, s, p)),
                               on_peer_gone=lambda r, k, why: self.gone.put_nowait((r, k, why)), policy=FAST)
        self.mgr.set_map(_map(url))

    @property
    def conn(self) -> derpclient.RegionConnection:
        return self.mgr.regions[999]

    async def start(self) -> Peer:
        self.mgr.set_home(999)
        await asyncio.wait_for(self.conn.connected.wait(), t(10))
        return self

    async def recv(self) -> tuple[int, bytes, bytes]:
        return await asyncio.wait_for(self.packets.get(), t(10))


@pytest.fixture
async def peers(devserver: DevServer) -> AsyncIterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for p in made:
        await p.mgr.close()


async def _pair(ds: DevServer, made: list[Peer], opts: DialOptions | None = None) -> tuple[Peer, Peer, DerpRelay]:
    opts = opts or DialOptions()
    a, b = Peer(ds.url, opts), Peer(ds.url, opts)
    made += [a, b]
    await a.start()
    await b.start()
    return a, b, relay(ds)


@pytest.mark.parametrize("websocket", [False, True], ids=["upgrade", "websocket"])
async def test_two_clients_exchange_packets(devserver: DevServer, peers: list[Peer], websocket: bool) -> None:
    opts = DialOptions(headers={"X-Test-Header": "value-1"}, force_websockets=websocket)
    with capture_logs() as logs:
        a, b, r = await _pair(devserver, peers, opts)
        assert a.conn.transport_name == ("websocket" if websocket else "upgrade")
        assert {u["style"] for u in r.upgrades} == {"websocket" if websocket else "derp"}
        assert all(u["headers"].get("X-Test-Header") == "value-1" for u in r.upgrades)
        assert sorted(r.clients) == sorted([a.pub, b.pub])
        await apoll(lambda: {(a.pub, True), (b.pub, True)} <= set(r.preferred_notes))  # NotePreferred(1)

        for i in range(50):
            assert a.mgr.send(999, b.pub, b"ping %d" % i)
        for i in range(50):
            assert await b.recv() == (999, a.pub, b"ping %d" % i)
        big = os.urandom(derp.MAX_PACKET_SIZE)
        assert b.mgr.send(0, a.pub, big)  # 0 = the home region
        assert await a.recv() == (999, b.pub, big)

        await r.ping(a.pub, timeout=t(10))  # the client's core answers the relay's Ping

        await b.mgr.close()
        assert await asyncio.wait_for(a.gone.get(), t(10)) == (999, b.pub, derp.PeerGoneReason.DISCONNECTED)
    events = [e["event"] for e in logs]
    assert events.count("DERP connected") == 2
    assert not any("packet" in e for e in events), events  # never a line per packet
    text = repr(logs)
    for secret in (a.priv.hex(), a.pub.hex(), "value-1"):
        assert secret not in text


async def test_refused_upgrade_falls_back_to_websocket(devserver: DevServer, peers: list[Peer]) -> None:
    r = relay(devserver)
    r.refuse_raw = True
    with capture_logs() as logs:
        a, b, _ = await _pair(devserver, peers)
    assert a.conn.transport_name == b.conn.transport_name == "websocket"
    assert [u["style"] for u in r.upgrades] == ["derp", "websocket", "derp", "websocket"]
    assert [e["status"] for e in logs if e["event"].startswith("DERP upgrade refused")] == [426, 426]
    assert a.mgr.send(999, b.pub, b"hi")
    assert await b.recv() == (999, a.pub, b"hi")


async def test_tls_verified_with_the_ca_file(short_tmp: Path) -> None:
    cert, key = _self_signed(short_tmp)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    async with DevServer(ssl_context=ctx) as ds:
        untrusted = Peer(ds.url, DialOptions())
        untrusted.mgr.set_home(999)
        try:
            await apoll(lambda: untrusted.conn.state == "failing", timeout=10)
            assert "certificate verify failed" in (untrusted.conn.last_error or "")
            assert not relay(ds).upgrades  # nothing got through an unverified connection
        finally:
            await untrusted.mgr.close()
        made: list[Peer] = []
        try:
            for websocket in (False, True):
                a, b, _ = await _pair(ds, made, DialOptions(tls_ca_file=str(cert), force_websockets=websocket))
                assert a.mgr.send(999, b.pub, b"over tls")
                assert await b.recv() == (999, a.pub, b"over tls")
            assert derpmap.node_url(made[0].conn._get_region().derp_node) == ds.url + "/derp"  # type: ignore[union-attr]
            assert await derpclient.measure_latency(_map(ds.url).regions[999].nodes[0],
                                                    DialOptions(tls_ca_file=str(cert))) > 0
        finally:
            for p in made:
                await p.mgr.close()


async def test_reconnects_after_the_relay_restarts(devserver: DevServer, peers: list[Peer]) -> None:
    a, b, r = await _pair(devserver, peers)
    with capture_logs() as logs:
        r.restart(reconnect_in=0.2, try_for=5)
        await apoll(lambda: a.conn.connections == 2 and b.conn.connections == 2 and len(r.clients) == 2, timeout=15)
    events = [e["event"] for e in logs]
    assert events.count("DERP server restarting") == 2 and events.count("DERP connected") == 2, events
    assert all(e["reconnect_in"] == 0.2 for e in logs if e["event"] == "DERP server restarting")
    assert "DERP connection failed; retrying" not in events  # the announced restart is one line, not two
    assert a.mgr.send(999, b.pub, b"after restart")
    assert await b.recv() == (999, a.pub, b"after restart")

    await devserver.go_down()  # the whole server goes away, connections cut, then comes back
    await apoll(lambda: a.conn.state == "failing" and b.conn.state == "failing", timeout=10)
    await devserver.come_up()
    await apoll(lambda: a.conn.connections == 3 and b.conn.connections == 3 and len(r.clients) == 2, timeout=20)
    assert a.mgr.send(999, b.pub, b"after outage")
    assert await b.recv() == (999, a.pub, b"after outage")


async def test_home_from_latency_and_status(devserver: DevServer, peers: list[Peer]) -> None:
    p = Peer(devserver.url, DialOptions())
    peers.append(p)
    assert await p.mgr.update_home() == 999
    assert set(p.mgr.derp_latency()) == {"999-v4"} and 0 < p.mgr.derp_latency()["999-v4"] < t(10)
    await asyncio.wait_for(p.conn.connected.wait(), t(10))
    st = p.mgr.status()
    assert st["home"] == 999 and st["regions"][999]["state"] == "connected"
    assert st["regions"][999]["preferred"] is True and st["regions"][999]["transport"] == "upgrade"
    assert devserver.requests_to("/derp/latency-check")


class ConnectProxy:
    """A tiny HTTP proxy on loopback (CONNECT, and absolute-form requests for http:// URLs as httpx
    sends them) that records each request head."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> ConnectProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:  # the pipes end by themselves (no task is cancelled)
            w.close()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        self.writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        self.seen.append(head)
        method, target, rest = head.split(b" ", 2)
        if method == b"CONNECT":
            host, port = target.decode().rsplit(":", 1)
            ur, uw = await asyncio.open_connection(host, int(port))
            self.writers.append(uw)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # GET http://host:port/path: forward in origin form
            u = urlsplit(target.decode())
            ur, uw = await asyncio.open_connection(u.hostname, u.port or 80)
            self.writers.append(uw)
            uw.write(method + b" " + (u.path or "/").encode() + b" " + rest)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
            finally:
                w.close()

        await asyncio.gather(pipe(reader, uw), pipe(ur, writer), return_exceptions=True)


async def test_connect_proxy(devserver: DevServer, peers: list[Peer]) -> None:
    async with ConnectProxy() as proxy:
        opts = DialOptions(proxies={"http": f"http://user:pa%40ss@127.0.0.1:{proxy.port}"})
        a, b, _ = await _pair(devserver, peers, opts)
        assert len(proxy.seen) == 2
        assert proxy.seen[0].startswith(f"CONNECT 127.0.0.1:{devserver.port} HTTP/1.1\r\n".encode())
        assert b"Proxy-Authorization: Basic dXNlcjpwYUBzcw==\r\n" in proxy.seen[0]  # user:pa@ss
        assert a.mgr.send(999, b.pub, b"via proxy")
        assert await b.recv() == (999, a.pub, b"via proxy")
        bypass = Peer(devserver.url, DialOptions(proxies={"http": f"http://127.0.0.1:{proxy.port}", "no": "127.0.0.1"}))
        peers.append(bypass)
        await bypass.start()
        assert len(proxy.seen) == 2  # NO_PROXY honoured


async def test_connect_proxy_then_tls(short_tmp: Path) -> None:
    cert, key = _self_signed(short_tmp)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    async with DevServer(ssl_context=ctx) as ds, ConnectProxy() as proxy:
        made: list[Peer] = []
        try:
            opts = DialOptions(tls_ca_file=str(cert), proxies={"https": f"http://127.0.0.1:{proxy.port}"})
            a, b, _ = await _pair(ds, made, opts)  # TLS to the relay inside the CONNECT tunnel
            assert len(proxy.seen) == 2 and a.conn.transport_name == "upgrade"
            assert a.mgr.send(999, b.pub, b"tls via proxy")
            assert await b.recv() == (999, a.pub, b"tls via proxy")
        finally:
            for p in made:
                await p.mgr.close()


def test_dial_options_from_settings(tmp_path: Path) -> None:
    from coder_agent.config import load_settings

    s = load_settings({}, env={"CODER_AGENT_URL": "https://coder.example.com", "CODER_AGENT_TOKEN": "t",
                               "CODER_AGENT_LOG_DIR": str(tmp_path), "CODER_AGENT_STATE_DIR": str(tmp_path),
                               "CODER_AGENT_HEADER": "X-Corp=secret", "CODER_AGENT_TLS_CA_FILE": "/etc/ca.pem",
                               "CODER_AGENT_TLS_INSECURE": "true"})
    o = DialOptions.from_settings(s, force_websockets=True)
    assert o == DialOptions(headers={"X-Corp": "secret"}, tls_ca_file="/etc/ca.pem", tls_insecure=True,
                            force_websockets=True)


async def test_relay_http_rules(devserver: DevServer) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=devserver.url) as c:
        assert (await c.get("/derp")).status_code == 426
        assert (await c.get("/derp/latency-check")).status_code == 200
        r = await c.post("/devserver/derp", json={"refuse_raw": True, "keepalive": 5})
        assert r.status_code == 200 and r.json()["refuse_raw"] is True and r.json()["keepalive"] == 5
        assert (await c.post("/devserver/derp", json={"keepalive": -1})).status_code == 400


async def test_server_keepalives_keep_the_connection_and_silence_ends_it(devserver: DevServer) -> None:
    r = relay(devserver)
    r.keepalive, r.keepalive_jitter = 0.1, 0.0
    got: list[bytes] = []
    m = DerpManager(os.urandom(32), DialOptions(), lambda *_: got.append(b""), policy=FAST, read_timeout=0.6)
    try:
        m.set_map(_map(devserver.url))
        m.set_home(999)
        conn = m.regions[999]
        await asyncio.wait_for(conn.connected.wait(), t(10))
        await asyncio.sleep(1.5)  # 2.5 read deadlines: only the relay's KeepAlives arrive, and suffice
        assert conn.state == "connected" and conn.connections == 1
        r.keepalive = 1e6  # the relay goes silent (the next keepalive is already scheduled)
        with capture_logs() as logs:
            await apoll(lambda: conn.connections == 3, timeout=15)
        assert any("nothing from the DERP server for 0.6 s" in str(e.get("error")) for e in logs), logs
    finally:
        await m.close()


async def test_extra_region_on_demand_and_idle_close(devserver: DevServer) -> None:
    async with DevServer() as other:
        node7 = DerpNode(name="7a", region_id=7, host_name="127.0.0.1", derp_port=other.port, force_http=True)
        both = DerpMap({**_map(devserver.url).regions, 7: DerpRegion(7, region_code="eu", nodes=(node7,))})
        a = DerpManager(os.urandom(32), DialOptions(), lambda r, s, p: got_a.put_nowait((r, s, p)), policy=FAST,
                        idle_timeout=0.3)
        b_priv = os.urandom(32)
        got_a: asyncio.Queue[tuple[int, bytes, bytes]] = asyncio.Queue()
        got_b: asyncio.Queue[tuple[int, bytes, bytes]] = asyncio.Queue()
        b = DerpManager(b_priv, DialOptions(), lambda r, s, p: got_b.put_nowait((r, s, p)), policy=FAST)
        try:
            for m in (a, b):
                m.set_map(both)
            a.set_home(999)
            b.set_home(7)
            await asyncio.wait_for(b.regions[7].connected.wait(), t(10))
            b_pub = derp.public_key(b_priv)
            assert a.send(7, b_pub, b"to your home")  # queued until the extra connection logs in
            r, src, data = await asyncio.wait_for(got_b.get(), t(10))
            assert (r, data) == (7, b"to your home")
            assert sorted(a.regions) == [7, 999] and a.regions[7].preferred is False
            assert a.regions[999].preferred is True
            assert b.send(0, src, b"reply")  # B answers through its home, where A now is too
            assert await asyncio.wait_for(got_a.get(), t(10)) == (7, b_pub, b"reply")
            assert not any(k == src for k, _ in relay(other).preferred_notes)  # no NotePreferred off home
            await apoll(lambda: 7 not in a.regions, timeout=10)  # idle: closed
            await apoll(lambda: src not in relay(other).clients, timeout=10)
            assert 999 in a.regions and a.home == 999
        finally:
            await a.close()
            await b.close()


async def test_health_and_home_change(devserver: DevServer, peers: list[Peer]) -> None:
    a, _b, r = await _pair(devserver, peers)
    with capture_logs() as logs:
        r.send_health(a.pub, "duplicate client")
        await apoll(lambda: a.conn.health == "duplicate client")
        r.send_health(a.pub, "")
        await apoll(lambda: a.conn.health == "")
    assert [e["event"] for e in logs] == ["DERP server reports a problem", "DERP server reports healthy again"]
    a.mgr.set_home(0)  # the old home gets NotePreferred(0)
    await apoll(lambda: (a.pub, False) in r.preferred_notes)


async def test_devserver_flag_refuses_the_raw_upgrade(peers: list[Peer]) -> None:
    import json
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "coder_agent.devserver", "--derp-refuse-upgrade"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = json.loads(await asyncio.to_thread(proc.stdout.readline))["url"]
        p = Peer(url, DialOptions())
        peers.append(p)
        await p.start()
        assert p.conn.transport_name == "websocket"
    finally:
        proc.terminate()
        proc.wait(t(10))


async def test_packets_sent_before_login_wait_for_it(devserver: DevServer, peers: list[Peer]) -> None:
    _a, b, _ = await _pair(devserver, peers)
    c = Peer(devserver.url, DialOptions())
    peers.append(c)
    c.mgr.set_home(999)
    sent = [c.mgr.send(999, b.pub, b"early %d" % i) for i in range(derpclient.MAX_PENDING + 5)]
    assert sent == [True] * derpclient.MAX_PENDING + [False] * 5  # 32 wait, the rest are dropped
    for i in range(derpclient.MAX_PENDING):
        assert await b.recv() == (999, c.pub, b"early %d" % i)
    assert c.conn.dropped == 5


async def test_disco_to_an_unknown_peer_gets_peer_gone_not_here(devserver: DevServer, peers: list[Peer]) -> None:
    a, _b, r = await _pair(devserver, peers)
    nobody = os.urandom(32)
    assert a.mgr.send(999, nobody, b"\x01\x00\x00\x00 wireguard")  # not disco: silently dropped
    assert a.mgr.send(999, nobody, "TS💬".encode() + os.urandom(60))
    assert await asyncio.wait_for(a.gone.get(), t(10)) == (999, nobody, derp.PeerGoneReason.NOT_HERE)
    assert r.dropped == 2 and a.gone.empty()


async def test_environment_proxy_for_every_path(devserver: DevServer, peers: list[Peer],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY from the environment, as httpx and websockets read it: the raw upgrade, the
    WebSocket dial and the latency check all go through the proxy; NO_PROXY turns it off."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with ConnectProxy() as proxy:
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        await _pair(devserver, peers, DialOptions())
        await _pair(devserver, peers, DialOptions(force_websockets=True))
        assert len(proxy.seen) == 4 and all(h.startswith(b"CONNECT 127.0.0.1:") for h in proxy.seen)
        assert [p.conn.transport_name for p in peers] == ["upgrade"] * 2 + ["websocket"] * 2
        assert await derpclient.measure_latency(_map(devserver.url).regions[999].nodes[0], DialOptions()) > 0
        assert len(proxy.seen) == 5  # httpx: absolute-form GETs on one kept-alive proxy connection
        assert proxy.seen[4].startswith(f"GET {devserver.url}/derp/latency-check HTTP/1.1".encode())
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        await _pair(devserver, peers, DialOptions())
        await _pair(devserver, peers, DialOptions(force_websockets=True))
        assert len(proxy.seen) == 5
