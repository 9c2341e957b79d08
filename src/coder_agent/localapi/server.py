"""The local API server (aiohttp).

Rules:

* Listens on ``unix:PATH`` (parent dir 0700, socket 0600, stale socket replaced, peers other
  than the daemon's own user and root refused with 403) or ``HOST:PORT`` (loopback unless the
  configuration explicitly allowed otherwise; checked at config load).
* Paths and JSON match the Go agent's ``/api/v0`` where one exists. Every error body is a
  ``codersdk.Response`` (``message``, optional ``detail`` and ``validations``): unknown routes,
  wrong methods, bad JSON and handler crashes included. No handler exception reaches the client
  as a traceback.
* Capabilities add their routes with :meth:`LocalAPI.route` before :meth:`start`.
* With a :class:`~coder_agent.metrics.Metrics`, every answered request is timed into the
  ``local_api_request_seconds`` histogram by method and route pattern (websockets are not: they
  last as long as the client stays).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from ..log import get_logger
from . import openapi

if TYPE_CHECKING:
    from ..metrics import Metrics

__all__ = ["Handler", "LocalAPI", "Routes", "bad_request", "json_response", "read_json"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Routes(Protocol):
    """Where a capability registers its local API routes (the :class:`LocalAPI`, before it starts)."""

    def route(self, method: str, path: str, handler: Handler) -> None: ...


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data, separators=(",", ":")), content_type="application/json"
    )


def error_response(status: int, message: str, detail: str = "", validations: list[dict[str, str]] | None = None
                   ) -> web.Response:
    body: dict[str, Any] = {"message": message}
    if detail:
        body["detail"] = detail
    if validations:
        body["validations"] = validations
    return json_response(body, status)


class HTTPResponseError(Exception):
    """Raise from a handler to answer with a codersdk.Response."""

    def __init__(self, status: int, message: str, detail: str = "",
                 validations: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.response = error_response(status, message, detail, validations)


def bad_request(message: str, field: str | None = None, detail: str = "") -> HTTPResponseError:
    vals = [{"field": field, "detail": detail or message}] if field else None
    return HTTPResponseError(400, message, detail, vals)


async def read_json(request: web.Request, max_bytes: int = 1 << 20) -> Any:
    """The request body as JSON; 400 (codersdk.Response) when too big or not JSON."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise HTTPResponseError(413, "Request body too large.", f"limit is {max_bytes} bytes")
    raw = await request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise HTTPResponseError(413, "Request body too large.", f"limit is {max_bytes} bytes")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request("Request body must be valid JSON.", detail=str(e)) from None


def _peer_uid(request: web.Request) -> int | None:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class LocalAPI:
    def __init__(self, address: str, metrics: Metrics | None = None) -> None:
        self.address = address
        self.metrics = metrics
        self.app = web.Application(middlewares=[self._timed, self._errors], client_max_size=2 << 20)
        self._runner: web.AppRunner | None = None
        self._log = get_logger("localapi")
        self.bound_port: int | None = None
        self.route("GET", "/", self._hello)
        self.route("GET", openapi.PATH, openapi.handler)

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.app.router.add_route(method, path, handler)

    def subset(self, keep: Callable[[str, str], bool]) -> web.Application:
        """A second application with the same error handling and the same handlers for the
        routes ``keep(method, path pattern)`` selects (one implementation, two listeners: the
        tailnet's agent HTTP API on port 4 serves this). Call after every route is registered."""
        app = web.Application(middlewares=[self._timed, self._errors], client_max_size=2 << 20)
        for r in self.app.router.routes():
            canonical = r.resource.canonical if r.resource is not None else ""
            if canonical and keep(r.method, canonical):
                app.router.add_route(r.method, canonical, r.handler)
        return app

    async def _hello(self, request: web.Request) -> web.Response:
        return json_response({"message": "Hello from the agent!"})

    @web.middleware
    async def _timed(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        resp = await handler(request)
        if self.metrics is not None and not isinstance(resp, web.WebSocketResponse):
            resource = request.match_info.route.resource
            method = request.method if request.method in _METHODS else "other"
            self.metrics.observe("local_api_request_seconds", time.perf_counter() - t0,
                                 "local API requests: time to the answer", method=method,
                                 route=resource.canonical if resource is not None else "unmatched")
        return resp

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        uid = _peer_uid(request)
        if uid is not None and uid not in (0, os.geteuid()):
            return error_response(403, "Forbidden.", "the local API only serves the daemon's own user")
        try:
            return await handler(request)
        except HTTPResponseError as e:
            return e.response
        except web.HTTPException as e:
            if e.status < 400:
                raise
            message = {404: "Route not found.", 405: "Method not allowed."}.get(e.status, e.reason)
            return error_response(e.status, message, f"{request.method} {request.path}")
        except Exception as e:
            self._log.exception("local API handler failed", path=request.path)
            return error_response(500, "Internal error.", type(e).__name__)

    @property
    def unix_path(self) -> Path | None:
        return Path(self.address[5:]) if self.address.startswith("unix:") else None

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        path = self.unix_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                st = path.lstat()
                if stat.S_ISSOCK(st.st_mode):
                    path.unlink()
                else:
                    raise OSError(f"{path} exists and is not a socket")
            except FileNotFoundError:
                pass
            old = os.umask(0o177)
            try:
                site: web.BaseSite = web.UnixSite(runner, str(path))
                await site.start()
            finally:
                os.umask(old)
            os.chmod(path, 0o600)
        else:
            host, _, port = self.address.rpartition(":")
            host = host.strip("[]")
            site = web.TCPSite(runner, host, int(port), reuse_address=True)
            await site.start()
            server = getattr(site, "_server", None)
            if server is not None and server.sockets:
                self.bound_port = int(server.sockets[0].getsockname()[1])
        self._log.info("local API listening", address=self.display_address)

    @property
    def display_address(self) -> str:
        if self.unix_path is None and self.bound_port is not None:
            host = self.address.rpartition(":")[0]
            return f"{host}:{self.bound_port}"
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        path = self.unix_path
        if path is not None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
