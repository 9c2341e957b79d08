"""DERP over loopback: frames per second client → relay → client, against a raw loopback socket
copy of the same bytes measured in the same run.

Ours: two :class:`~coder_agent.tailnet.derpclient.RegionConnection` clients logged in to the
devserver's relay (aiohttp, ``Upgrade: DERP`` or WebSocket), A sending 1280-byte packets (the
tunnel MTU) to B, at most ``--window`` in flight. Baseline: the same SendPacket frame bytes written
(one write per burst, as the DERP client coalesces the writes of one loop turn) to a plain asyncio
TCP forwarder that copies every byte to a second loopback connection, where
a reader counts them (no framing, no crypto, no relay logic). All in this process, one event
loop; the ratio says what the DERP client, the relay and the framing cost over moving the bytes.

    python -m bench.derp [--quick] [--seconds 3] [--size 1280] [--window 256]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time


async def _derp_rate(websocket: bool, seconds: float, size: int, window: int) -> float:
    from coder_agent.devserver import DevServer
    from coder_agent.devserver.derp import relay
    from coder_agent.tailnet import derp
    from coder_agent.tailnet.derpclient import DialOptions, RegionConnection
    from coder_agent.tailnet.derpmap import DerpMap, DerpNode, DerpRegion, rewrite_default_relay

    async with DevServer() as ds:
        dm = rewrite_default_relay(DerpMap({999: DerpRegion(999, embedded_relay=True, nodes=(DerpNode(),))}), ds.url)
        opts = DialOptions(force_websockets=websocket)
        received = 0
        more = asyncio.Event()

        def on_packet(region: int, src: bytes, data: bytes) -> None:
            nonlocal received
            received += 1
            more.set()

        a_key, b_key = os.urandom(32), os.urandom(32)
        a = RegionConnection(999, lambda: dm.regions[999], a_key, opts, lambda *_: None)
        b = RegionConnection(999, lambda: dm.regions[999], b_key, opts, on_packet)
        a.start()
        b.start()
        await asyncio.wait_for(asyncio.gather(a.connected.wait(), b.connected.wait()), 10)
        await relay(ds).wait_for(lambda: len(relay(ds).clients) == 2)
        dst = derp.public_key(b_key)
        payload = os.urandom(size)
        sent = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            while sent - received < window:
                if a.send(dst, payload):
                    sent += 1
            more.clear()
            await more.wait()
        while received < sent - a.dropped:
            more.clear()
            await asyncio.wait_for(more.wait(), 10)
        took = time.perf_counter() - t0
        assert a.dropped == 0 and received == sent, (a.dropped, received, sent)
        await a.close()
        await b.close()
        return received / took


async def _raw_rate(seconds: float, size: int, window: int) -> float:
    from coder_agent.tailnet import derp
    from coder_agent.tailnet.derp import FrameType

    frame = derp.encode_frame(FrameType.SEND_PACKET, os.urandom(32) + os.urandom(size))
    sink_ready: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()
    forwards: list[asyncio.Task[None]] = []

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sink_ready.set_result(writer)

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        out = await sink_ready
        while data := await reader.read(256 << 10):
            out.write(data)
            await out.drain()

    async def on_forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        forwards.append(asyncio.current_task())  # type: ignore[arg-type]
        await forward(reader, writer)

    fwd_server = await asyncio.start_server(on_forward, "127.0.0.1", 0)
    sink_server = await asyncio.start_server(sink, "127.0.0.1", 0)
    sink_r, sw = await asyncio.open_connection("127.0.0.1", sink_server.sockets[0].getsockname()[1])
    _fr, fw = await asyncio.open_connection("127.0.0.1", fwd_server.sockets[0].getsockname()[1])
    await sink_ready
    received_bytes = 0
    sent = 0
    more = asyncio.Event()

    async def count() -> None:
        nonlocal received_bytes
        while data := await sink_r.read(256 << 10):
            received_bytes += len(data)
            more.set()

    counter = asyncio.ensure_future(count())
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n = window - (sent - received_bytes // len(frame))
        if n > 0:  # one write per burst, as the DERP client's writes within one loop turn
            fw.write(frame * n)
            sent += n
        more.clear()
        await more.wait()
    while received_bytes < sent * len(frame):
        more.clear()
        await asyncio.wait_for(more.wait(), 10)
    took = time.perf_counter() - t0
    fw.close()
    await asyncio.wait(forwards, timeout=5)  # the forwarder sees EOF and ends
    sw.close()
    counter.cancel()
    fwd_server.close()
    sink_server.close()
    return sent / took


async def main(seconds: float, size: int, window: int) -> None:
    from coder_agent.log import configure_logging

    configure_logging(level="warning")
    # The baseline runs before and after (its mean is used) so a load change on a shared
    # machine during the run skews the ratio less.
    raw1 = await _raw_rate(seconds, size, window)
    up = await _derp_rate(False, seconds, size, window)
    ws = await _derp_rate(True, seconds, size, window)
    raw = (raw1 + await _raw_rate(seconds, size, window)) / 2
    mib = size / (1 << 20)
    print(f"| measure | DERP | raw loopback copy | ratio |\n|---|---|---|---|\n"
          f"| {size}-byte frames/s, Upgrade: DERP | {up:,.0f} | {raw:,.0f} | {up / raw:.2f}x |\n"
          f"| {size}-byte frames/s, WebSocket | {ws:,.0f} | {raw:,.0f} | {ws / raw:.2f}x |\n"
          f"\nPayload MiB/s: Upgrade: DERP {up * mib:,.1f}, WebSocket {ws * mib:,.1f}, raw copy {raw * mib:,.1f}.")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="1 s per measurement")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=1280, help="packet bytes (the tunnel MTU)")
    ap.add_argument("--window", type=int, default=256, help="packets in flight at most")
    a = ap.parse_args()
    asyncio.run(main(1.0 if a.quick else a.seconds, a.size, a.window))
