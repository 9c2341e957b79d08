"""The listening-ports service: cached scans, change detection, the local API routes.

Rules:

* A scan runs in a worker thread (it is blocking file I/O) and its outcome — the list or the
  error — is reused for :attr:`PortsService.cache_ttl` (1 s, the Go agent's
  ``portCacheDuration``), so a burst of requests costs one scan; concurrent callers share the
  scan in flight.
* Scans happen on demand: a local API request (through the 1 s cache) or a connected watcher.
  The background loop scans every ``watch_interval`` (1 s) while a websocket watches; with no
  watcher it keeps a slow cadence that backs off while nothing changes: ``idle_interval`` (5 s),
  doubled after each unchanged scan up to ``idle_max`` (60 s), back to 5 s when any scan (whoever
  asked for it) sees a change. A new watcher wakes it at once. Every scan compares the list with
  the last one and pushes it to the watchers when it changed. The ``/proc/*/fd`` owner walk runs
  only for sockets not seen before (:class:`.scan.OwnerCache`).
* ``GET /api/v0/listening-ports`` → ``{"ports": [{"process_name", "network", "port"}]}`` sorted
  by port; a failed scan → 500 ``{"message": "Could not scan for listening ports.", "detail"}``.
* ``GET /api/v0/listening-ports/watch`` → websocket: the full list (same JSON) on connect and
  after each change; the server pings (``heartbeat``) so dead peers are noticed; a client that
  goes away only ends its own watch.
* Health: ``ok``; ``degraded`` with the reason when a fallback reader had to be used or no reader
  works (restricted ``/proc`` in a container). Never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from ..clock import Clock, SystemClock
from ..localapi import json_response
from ..localapi.server import HTTPResponseError
from ..log import Collapse, get_logger
from ..service import Health, Service
from .scan import ScanError, Scanner, default_scanner
from .select import ListeningPort, PortSelector, to_wire

if TYPE_CHECKING:
    from ..config import Settings
    from ..localapi import Routes
    from ..metrics import Metrics

__all__ = ["SCAN_ERROR_MESSAGE", "PortsService", "setup"]

SCAN_ERROR_MESSAGE = "Could not scan for listening ports."
LIST_PATH = "/api/v0/listening-ports"
WATCH_PATH = "/api/v0/listening-ports/watch"


class PortsService:
    name = "ports"

    def __init__(
        self,
        scanner: Scanner,
        *,
        exclude: Callable[[], Iterable[int]] = lambda: (),
        clock: Clock | None = None,
        cache_ttl: float = 1.0,
        watch_interval: float = 1.0,
        idle_interval: float = 5.0,
        idle_max: float = 60.0,
        heartbeat: float = 15.0,
    ) -> None:
        self.scanner = scanner
        self.exclude = exclude
        self.clock = clock or SystemClock()
        self.cache_ttl = cache_ttl
        self.watch_interval = watch_interval
        self.idle_interval = idle_interval
        self.idle_max = max(idle_max, idle_interval)
        self.heartbeat = heartbeat
        self.health = Health()
        self.scans = 0  # real scans done (tests look at it)
        self._selector = PortSelector()
        self._log = get_logger("ports")
        self._collapse = Collapse(self._log)
        self._cached: tuple[float, list[ListeningPort] | ScanError] | None = None
        self._inflight: asyncio.Future[list[ListeningPort]] | None = None
        self._last: list[dict[str, Any]] | None = None
        self._watchers: set[asyncio.Queue[list[dict[str, Any]]]] = set()
        self._wake = asyncio.Event()
        self._changes = 0  # how many scans saw a different list (the idle back-off resets on it)
        self._idle = idle_interval  # the current idle interval

    # scanning ----------------------------------------------------------------------------

    def _scan_sync(self) -> list[ListeningPort]:
        result = self.scanner.scan()
        ports = self._selector.select(result.listeners, self.exclude())
        if result.warning:
            self.health.set("degraded", result.warning)
            self._collapse.error("listening ports: fallback reader in use", result.warning, reason=result.warning)
        else:
            self.health.set("ok")
            self._collapse.ok("listening ports: scanning works again")
        return ports

    async def ports(self, max_age: float | None = None) -> list[ListeningPort]:
        """The current listening ports (cached up to ``max_age``, default ``cache_ttl``).

        Raises :class:`ScanError` when the scan failed (the failure is cached like a result).
        """
        ttl = self.cache_ttl if max_age is None else max_age
        cached = self._cached
        if cached is not None and self.clock.monotonic() - cached[0] < ttl:
            return _unwrap(cached[1])
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._scan())
        # shield: one caller giving up (client disconnect) must not cancel the shared scan
        return await asyncio.shield(self._inflight)

    async def _scan(self) -> list[ListeningPort]:
        try:
            self.scans += 1
            try:
                ports: list[ListeningPort] | ScanError = await asyncio.to_thread(self._scan_sync)
            except ScanError as e:
                ports = e
                msg = f"listening ports unavailable: {e}"
                self.health.set("degraded", msg)
                self._collapse.error("cannot scan for listening ports", msg, reason=str(e))
            except Exception as e:  # a bug in a reader must not take the daemon down
                ports = ScanError(f"{type(e).__name__}: {e}")
                self.health.set("degraded", f"listening ports unavailable: {ports}")
                self._log.exception("listening-port scan crashed")
            self._cached = (self.clock.monotonic(), ports)
            if not isinstance(ports, ScanError):
                self._publish(ports)
            return _unwrap(ports)
        finally:
            self._inflight = None

    def _publish(self, ports: list[ListeningPort]) -> None:
        wire = [p.wire() for p in ports]
        if wire == self._last:
            return
        self._last = wire
        self._changes += 1
        for q in self._watchers:
            if q.full():
                q.get_nowait()  # a slow watcher only needs the newest list
            q.put_nowait(wire)

    async def run(self) -> None:
        self.health.set("starting")
        seen = self._changes
        while True:
            # cleared before the scan: a watcher arriving during it must still cut the sleep short
            self._wake.clear()
            with contextlib.suppress(ScanError):
                await self.ports(max_age=min(self._interval() / 2, self.cache_ttl))
            if self._changes != seen:
                seen = self._changes
                self._idle = self.idle_interval
            elif not self._watchers:
                self._idle = min(self._idle * 2, self.idle_max)
            interval = self._interval()
            sleep = asyncio.ensure_future(self.clock.sleep(interval))
            wake = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleep, wake}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleep.cancel()
                wake.cancel()

    def _interval(self) -> float:
        return self.watch_interval if self._watchers else self._idle

    # local API ---------------------------------------------------------------------------

    def install(self, local_api: Any) -> None:
        local_api.route("GET", LIST_PATH, self.handle_list)
        local_api.route("GET", WATCH_PATH, self.handle_watch)

    async def handle_list(self, request: web.Request) -> web.Response:
        try:
            ports = await self.ports()
        except ScanError as e:
            raise HTTPResponseError(500, SCAN_ERROR_MESSAGE, str(e)) from None
        return json_response(to_wire(ports))

    async def handle_watch(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=self.heartbeat)
        await ws.prepare(request)
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue(maxsize=1)
        self._watchers.add(queue)
        self._wake.set()
        reader = asyncio.ensure_future(_until_closed(ws))
        try:
            try:
                first = [p.wire() for p in await self.ports()]
            except ScanError as e:
                await ws.send_json({"message": SCAN_ERROR_MESSAGE, "detail": str(e)})
                await ws.close(code=1011, message=SCAN_ERROR_MESSAGE.encode())
                return ws
            sent = first
            await ws.send_json({"ports": first})
            while not ws.closed:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                wire = getter.result()
                if wire != sent:
                    await ws.send_json({"ports": wire})
                    sent = wire
        except (ConnectionError, RuntimeError):
            pass  # the client went away mid-send
        finally:
            self._watchers.discard(queue)
            reader.cancel()
            with contextlib.suppress(Exception):
                await ws.close()
        return ws


async def _until_closed(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) client messages until the connection closes."""
    async for msg in ws:
        if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            break


def _unwrap(v: list[ListeningPort] | ScanError) -> list[ListeningPort]:
    if isinstance(v, ScanError):
        raise ScanError(str(v))  # a fresh error per caller: no shared, growing traceback
    return v


def _port_of(address: str) -> int | None:
    _, sep, port = address.strip().rpartition(":")
    if not sep:
        return None
    try:
        n = int(port)
    except ValueError:
        return None
    return n or None


def setup(*, settings: Settings, clock: Clock, metrics: Metrics, own_ports: set[int], routes: Routes) -> list[Service]:
    """The daemon capability: the service and its two local API routes. ``own_ports`` fills in as the
    daemon's own listeners bind; they are never "listening ports"."""
    fixed = set(settings.ports_ignore)
    prom = _port_of(settings.prometheus_address)
    if prom is not None:
        fixed.add(prom)

    def exclude() -> set[int]:
        # own_ports fills in as the local API and metrics endpoint bind: read it at scan time
        return fixed | own_ports

    svc = PortsService(default_scanner(), exclude=exclude, clock=clock)
    svc.install(routes)
    metrics.gauge_fn("listening_ports_scans", lambda: float(svc.scans), "listening-port scans done")
    return [svc]
