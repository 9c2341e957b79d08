"""The agent HTTP API inside the tunnel (port 4) and what only it adds (coder-tailnet.md §7).

Rules:

* coderd reaches the agent at ``http://[agent-ip]:4`` (``agentConn.apiRequest``). Only the Go
  agent's routes that coderd calls are served there: ``GET /``, ``GET /api/v0/listening-ports``,
  the ``/api/v0/containers`` family (403 JSON while dev containers are off, as the local API
  answers), ``GET /api/v0/netcheck``, ``POST /api/v0/list-directory``, ``GET /debug/manifest``
  and ``GET /debug/prometheus``. The local unix-socket API keeps everything else.
* One implementation, two listeners: the tunnel's application is
  :meth:`LocalAPI.subset` of the local API (the same handler objects and error handling), plus
  ``/debug/manifest`` (the handler of ``/api/v0/manifest``) and ``/debug/prometheus`` (the
  daemon's metrics). ``list-directory`` and ``netcheck`` are registered on the local API too.
* Transport: the application runs on a loopback listener (127.0.0.1, a kernel-chosen port,
  added to the daemon's own ports so it never shows as a listening port), started with the first
  tunnel connection to port 4; each such connection is spliced to it like a forwarded port.
  Measured (``bench.tunnel``, new connection per request, medians): a whole
  ``GET /api/v0/netcheck`` straight to the loopback listener takes 0.65 ms, through the tunnel
  4.0 ms, so the hop (a loopback connect and the splice) is at most a sixth of a request's time;
  in exchange aiohttp runs on a real socket transport, its flow control, keep-alive and
  timeouts untouched, where feeding it a home-made transport would need our own versions of all
  of them.
* 20 s per request (Go's chi server: 20 s read/write timeouts): a handler still running after
  that is cut and the client gets 504 JSON; an idle keep-alive connection is closed after 20 s.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ..localapi.server import HTTPResponseError, LocalAPI, json_response, read_json

if TYPE_CHECKING:
    from aiohttp import web

    from ..metrics import Metrics
    from .tunnel import TunnelConn

__all__ = ["REQUEST_TIMEOUT", "AgentHttpApi", "list_directory"]

REQUEST_TIMEOUT: Final = 20.0
_GO_ROUTES: Final = frozenset({
    ("GET", "/"),
    ("GET", "/api/v0/listening-ports"),
    ("GET", "/api/v0/netcheck"),
    ("POST", "/api/v0/list-directory"),
})


def _tunnel_route(method: str, path: str) -> bool:
    return (method, path) in _GO_ROUTES or path == "/api/v0/containers" or path.startswith("/api/v0/containers/")


def list_directory(query: Any, home: str | None = None) -> tuple[int, dict[str, Any]]:
    """Go's ``HandleLS`` (agent/ls.go): ``{"path": [...], "relativity": "root"|"home"}`` →
    (status, body): the directory's entries, directories first then by name."""
    if not isinstance(query, dict):
        return 400, {"message": "Request body must be a JSON object."}
    parts = query.get("path") or []
    relativity = query.get("relativity")
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        return 400, {"message": "path must be a list of strings"}
    if relativity == "home":
        base = home or os.path.expanduser("~")
    elif relativity == "root":
        base = "/"
    else:  # Go answers 500; a bad request is a 400 here (the local API's rule)
        return 400, {"message": f'unsupported relativity type "{relativity or ""}"'}
    try:
        full = os.path.abspath(os.path.join(base, *parts))
    except ValueError:  # an embedded NUL
        return 400, {"message": "path must not contain NUL characters"}
    try:
        with os.scandir(full) as it:
            entries = [{"name": e.name, "absolute_path_string": os.path.join(full, e.name),
                        "is_dir": e.is_dir()} for e in it]
    except FileNotFoundError:
        return 404, {"message": f'failed to open directory "{full}": no such file or directory'}
    except PermissionError:
        return 403, {"message": f'failed to open directory "{full}": permission denied'}
    except NotADirectoryError:
        return 400, {"message": f'path "{full}" is not a directory'}
    except (OSError, ValueError) as e:  # a name too long, a loop of links, ...: the path asked for
        return 400, {"message": f'failed to open directory "{full}": {getattr(e, "strerror", None) or e}'}
    entries.sort(key=lambda e: (not e["is_dir"], e["name"]))
    return 200, {"absolute_path": [p for p in Path(full).parts if p != "/"], "absolute_path_string": full,
                 "contents": entries}


class AgentHttpApi:
    """Port 4: see the module rules. ``netcheck`` gives the body of ``GET /api/v0/netcheck``."""

    def __init__(self, api: LocalAPI, metrics: Metrics, own_ports: set[int],
                 netcheck: Callable[[], dict[str, Any]], status: dict[str, Any] | None = None) -> None:
        self.api = api
        self.metrics = metrics
        self.own_ports = own_ports
        self.netcheck = netcheck
        self.port: int | None = None
        self._status = status if status is not None else {}
        self._runner: web.AppRunner | None = None
        self._starting: asyncio.Lock | None = None
        api.route("POST", "/api/v0/list-directory", self._list_directory)
        api.route("GET", "/api/v0/netcheck", self._netcheck)

    async def _list_directory(self, request: web.Request) -> web.Response:
        query = await read_json(request)
        status, body = await asyncio.to_thread(list_directory, query)
        return json_response(body, status)

    async def _netcheck(self, request: web.Request) -> web.Response:
        return json_response(self.netcheck())

    async def _prometheus(self, request: web.Request) -> web.Response:
        from aiohttp import web

        from ..metrics import CONTENT_TYPE

        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    def build_app(self) -> web.Application:
        from aiohttp import web

        app = self.api.subset(_tunnel_route)
        for r in self.api.app.router.routes():
            if r.method == "GET" and r.resource is not None and r.resource.canonical == "/api/v0/manifest":
                app.router.add_route("GET", "/debug/manifest", r.handler)
        app.router.add_route("GET", "/debug/prometheus", self._prometheus)

        @web.middleware
        async def timeout(request: web.Request, handler: Any) -> web.StreamResponse:
            try:
                resp: web.StreamResponse = await asyncio.wait_for(handler(request), REQUEST_TIMEOUT)
            except TimeoutError:
                raise HTTPResponseError(504, "Request timed out.",
                                        f"no answer within {REQUEST_TIMEOUT:g} s") from None
            return resp

        app.middlewares.append(timeout)
        return app

    async def start(self) -> int:
        """Start the loopback listener once; its port."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.port is None:
                from aiohttp import web

                runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False,
                                       keepalive_timeout=REQUEST_TIMEOUT)
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                server = getattr(site, "_server", None)
                assert server is not None and server.sockets
                self.port = int(server.sockets[0].getsockname()[1])
                self.own_ports.add(self.port)
                self._status["http_api_loopback_port"] = self.port
                self._runner = runner
            return self.port

    async def handle(self, conn: TunnelConn) -> None:
        """A tunnel connection to port 4: spliced to the loopback listener."""
        from .tunnel import forward_to

        port = await self.start()
        await forward_to("127.0.0.1", port)(conn)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            if self.port is not None:
                self.own_ports.discard(self.port)
            self.port = None
            self._status.pop("http_api_loopback_port", None)
