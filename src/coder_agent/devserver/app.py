"""The devserver's HTTP application: middleware (recording, faults, agent auth) and the REST
routes of the agent API. Each capability's server side lives in its own module here and is
installed by :meth:`DevServer.build_app`.

Rules copied from coderd (../shared/protocol/coder-agent-http.md): agent routes need a
``Coder-Session-Token`` that parses as a UUID and names a known agent (else 401); bodies are
validated as coderd does (400 "Validation failed." with one validation per field); logs are
capped at 1 MiB per agent (413, nothing inserted); log-source answers 201 and is idempotent;
PATCH logs and app-status answer 200 with ``null``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from aiohttp import web

from ..coderapi.models import APP_STATUS_STATES, LOG_LEVELS
from .state import EXTERNAL_SOURCE, MAX_LOGS_LENGTH, DevAgent, DevState, Fault, RequestRecord

__all__ = ["DevServer", "agent_of", "coder_error"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATE_KEY: web.AppKey[DevState] = web.AppKey("state", DevState)


def coder_error(status: int, message: str, detail: str = "",
                validations: list[dict[str, str]] | None = None) -> web.Response:
    body: dict[str, Any] = {"message": message}
    if detail:
        body["detail"] = detail
    if validations:
        body["validations"] = validations
    return web.json_response(body, status=status)


# aiohttp >= 3.14 wants typed request keys (a str key warns); older versions only have str keys.
_AGENT_KEY: Any = web.RequestKey("agent", DevAgent) if hasattr(web, "RequestKey") else "agent"


def agent_of(request: web.Request) -> DevAgent:
    agent = request.get(_AGENT_KEY)
    assert isinstance(agent, DevAgent)
    return agent


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DevServer:
    """Run with ``async with DevServer() as ds:``; ``ds.url`` is the base URL."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, agents: list[DevAgent] | None = None,
                 ssl_context: ssl.SSLContext | None = None, tailnet: bool = False) -> None:
        self.host = host
        # Put the DERP map into the manifest, so the agent joins the tailnet (a real coderd always
        # does; off by default so that tests not about the tunnel do not run one).
        self.tailnet = tailnet
        self.port = port
        self.state = DevState(agents=agents if agents is not None else [DevAgent()])
        self.ssl_context = ssl_context  # serve HTTPS (tests of TLS verification)
        self.down = False  # "control plane down": see go_down()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.url = ""

    @property
    def agent(self) -> DevAgent:
        return self.state.agents[0]

    # lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> DevServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.state.changed = asyncio.Condition()
        app = self.build_app()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = await self._listen()
        server = getattr(site, "_server", None)
        assert server is not None and server.sockets
        self.port = int(server.sockets[0].getsockname()[1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"
        self.state.access_url = self.url

    async def _listen(self) -> web.TCPSite:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context)
        await site.start()
        self._site = site
        return site

    async def go_down(self) -> None:
        """The control plane goes away: the listening socket is closed (new connections are
        refused) and every open connection is cut. :meth:`come_up` listens on the same port again."""
        self.down = True
        if self._site is not None:
            await self._site.stop()
            self._site = None
        server = self._runner.server if self._runner is not None else None
        for conn in list(server.connections) if server is not None else []:
            if conn.transport is not None:
                conn.transport.abort()

    async def come_up(self) -> None:
        self.down = False
        if self._site is None:
            await self._listen()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record, self._faults, self._auth], client_max_size=8 << 20)
        app[STATE_KEY] = self.state
        r = app.router
        r.add_get("/api/v2/buildinfo", self._buildinfo)
        r.add_post("/api/v2/workspaceagents/me/log-source", self._post_log_source)
        r.add_patch("/api/v2/workspaceagents/me/logs", self._patch_logs)
        r.add_patch("/api/v2/workspaceagents/me/app-status", self._patch_app_status)
        # control API for tests and the demo
        r.add_get("/devserver/state", self._ctl_state)
        r.add_post("/devserver/faults", self._ctl_add_fault)
        r.add_delete("/devserver/faults", self._ctl_clear_faults)
        for install in _installers():
            install(app, self)
        return app

    # waiting helpers for tests ---------------------------------------------------------

    async def notify(self) -> None:
        assert self.state.changed is not None
        async with self.state.changed:
            self.state.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (re-checked on every change); TimeoutError if not."""
        cond = self.state.changed
        assert cond is not None
        async with asyncio.timeout(timeout):
            async with cond:
                while not predicate():
                    try:
                        await asyncio.wait_for(cond.wait(), 0.25)
                    except TimeoutError:
                        pass

    def add_fault(self, fault: Fault) -> Fault:
        self.state.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.state.faults.clear()

    def requests_to(self, path_fragment: str, method: str | None = None) -> list[RequestRecord]:
        return [r for r in self.state.requests
                if path_fragment in r.path and (method is None or r.method == method)]

    # middleware ------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/devserver/"):
            return await handler(request)
        body: Any = None
        if request.can_read_body and request.method in ("POST", "PATCH", "PUT"):
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        rec = RequestRecord(request.method, request.path, dict(request.query),
                            {k: v for k, v in request.headers.items()}, _now(), body=body)
        self.state.requests.append(rec)
        key = f"{request.method} {request.path}"
        st = self.state
        st.in_flight[key] = st.in_flight.get(key, 0) + 1
        st.max_in_flight[key] = max(st.max_in_flight.get(key, 0), st.in_flight[key])
        try:
            resp = await handler(request)
            rec.status = resp.status
            return resp
        finally:
            st.in_flight[key] -= 1
            await self.notify()

    @web.middleware
    async def _faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/devserver/"):
            return await handler(request)
        if self.down:  # a request that raced go_down() on a connection accepted just before
            _reset(request)
        fault = self.state.fault_for(request.method, request.path)
        if fault is None:
            return await handler(request)
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if not fault.after:
            if fault.drop:
                _reset(request)
            if fault.status is not None:
                return coder_error(fault.status, fault.message, "devserver fault injection")
        resp = await handler(request)
        if fault.after and fault.drop:
            _reset(request)
        if fault.after and fault.status is not None:
            return coder_error(fault.status, fault.message, "devserver fault injection (after processing)")
        if (fault.trickle or fault.partial is not None) and isinstance(resp, web.Response):
            return await _slow_body(request, resp, fault)
        return resp

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/v2/workspaceagents/me/"):
            return await handler(request)
        token = (request.headers.get("Coder-Session-Token") or request.cookies.get("coder_session_token")
                 or request.query.get("coder_session_token"))
        if not token:
            return coder_error(401, 'Cookie "coder_session_token" must be provided.')
        try:
            uuid.UUID(token)
        except ValueError:
            return coder_error(401, "Workspace agent token invalid.", "An agent token must be a valid UUIDv4.")
        agent = self.state.agent_by_token(token)
        if agent is None:
            return coder_error(401, "Workspace agent not authorized.",
                               "The agent cannot authenticate until the workspace provision job has been completed.")
        request[_AGENT_KEY] = agent
        return await handler(request)

    # routes ----------------------------------------------------------------------------

    async def _buildinfo(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "v2.99.0-devserver", "external_url": "", "dashboard_url": self.url,
                                  "workspace_proxy": False, "agent_api_version": "2.13"})

    @staticmethod
    async def _json(request: web.Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text=json.dumps({"message": "Request body must be valid JSON."}),
                                     content_type="application/json") from None

    async def _post_log_source(self, request: web.Request) -> web.Response:
        agent = agent_of(request)
        body = await self._json(request)
        if not isinstance(body, dict):
            return coder_error(400, "Request body must be valid JSON.")
        vals = []
        try:
            uuid.UUID(str(body.get("id", "")))
        except ValueError:
            vals.append({"field": "id", "detail": "Validation failed for tag \"required\" with value: \"\""})
        if not body.get("display_name"):
            vals.append({"field": "display_name", "detail": "Validation failed for tag \"required\" with value: \"\""})
        if vals:
            return coder_error(400, "Validation failed.", validations=vals)
        src = {"workspace_agent_id": agent.id, "id": str(body["id"]), "created_at": _now().isoformat(),
               "display_name": str(body["display_name"]), "icon": str(body.get("icon") or "")}
        agent.log_sources.setdefault(src["id"], src)
        return web.json_response(src, status=201)

    async def _patch_logs(self, request: web.Request) -> web.Response:
        agent = agent_of(request)
        body = await self._json(request)
        if not isinstance(body, dict):
            return coder_error(400, "Request body must be valid JSON.")
        logs = body.get("logs") or []
        if not isinstance(logs, list) or not logs:
            return coder_error(400, "No logs provided.")
        source = str(body.get("log_source_id") or "00000000-0000-0000-0000-000000000000")
        try:
            if uuid.UUID(source).int == 0:
                source = EXTERNAL_SOURCE
                agent.log_sources.setdefault(source, {"id": source, "display_name": "External",
                                                      "icon": "/emojis/1f310.png", "workspace_agent_id": agent.id})
        except ValueError:
            return coder_error(400, "Validation failed.", validations=[{"field": "log_source_id", "detail": "invalid"}])
        rows = []
        size = 0
        for item in logs:
            if not isinstance(item, dict):
                return coder_error(400, "Validation failed.",
                                   validations=[{"field": "logs", "detail": "not an object"}])
            level = item.get("level") or "info"
            if level not in LOG_LEVELS:
                return coder_error(400, "Invalid log level provided.", detail=f"invalid log level: {level!r}")
            output = str(item.get("output", ""))
            if "\x00" in output:
                return coder_error(500, "Failed to upload logs", "invalid byte sequence for encoding \"UTF8\": 0x00")
            size += len(output.encode("utf-8"))
            rows.append({"log_source_id": source, "output": output, "level": level,
                         "created_at": item.get("created_at"), "received_at": _now().isoformat()})
        if agent.logs_length + size > MAX_LOGS_LENGTH:
            first = not agent.logs_overflowed
            agent.logs_overflowed = True
            if first:
                return coder_error(413, "Logs limit exceeded")
            return coder_error(413, "Logs limit exceeded", 'new row violates check constraint "max_logs_length"')
        agent.logs_length += size
        agent.logs.extend(rows)
        return web.json_response(None)

    async def _patch_app_status(self, request: web.Request) -> web.Response:
        agent = agent_of(request)
        body = await self._json(request)
        if not isinstance(body, dict):
            return coder_error(400, "Request body must be valid JSON.")
        message = str(body.get("message") or "")
        if len(message.encode("utf-8")) > 160:
            return coder_error(400, "Message is too long.", validations=[
                {"field": "message", "detail": "Message must be less than 160 characters."}])
        state = body.get("state")
        if state not in APP_STATUS_STATES:
            return coder_error(400, "Invalid state provided.", validations=[
                {"field": "state", "detail": f"invalid state provided: {state!r}"}])
        slug = str(body.get("app_slug") or "")
        if slug not in agent.app_slugs:
            return coder_error(400, "Failed to get workspace app.", f"No app found with slug {slug!r}")
        agent.app_statuses.append({"app_slug": slug, "state": state, "message": message,
                                   "uri": str(body.get("uri") or ""), "created_at": _now().isoformat()})
        return web.json_response(None)

    # control API -------------------------------------------------------------------------

    async def _ctl_state(self, request: web.Request) -> web.Response:
        return web.json_response({
            "agents": [a.summary() for a in self.state.agents],
            "requests": len(self.state.requests),
            "faults": [f.__dict__ for f in self.state.faults],
        })

    async def _ctl_add_fault(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        try:
            fault = Fault(**body)
        except TypeError as e:
            return coder_error(400, "Bad fault.", str(e))
        self.add_fault(fault)
        return web.json_response(fault.__dict__, status=201)

    async def _ctl_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response(None)


def _reset(request: web.Request) -> NoReturn:
    if request.transport is not None:
        request.transport.abort()
    raise ConnectionResetError("devserver dropped the connection (injected)")


async def _slow_body(request: web.Request, resp: web.Response, fault: Fault) -> web.StreamResponse:
    """Send ``resp`` with its body trickled, or cut after ``fault.partial`` bytes."""
    body = resp.body if isinstance(resp.body, bytes) else b""
    out = web.StreamResponse(status=resp.status, headers={"Content-Type": resp.headers.get("Content-Type", "")})
    out.content_length = len(body)
    await out.prepare(request)
    if fault.partial is not None:
        await out.write(body[:fault.partial])
        await asyncio.sleep(0.05)
        _reset(request)
    for i in range(len(body)):
        await out.write(body[i:i + 1])
        await asyncio.sleep(fault.trickle)
    await out.write_eof()
    return out


Extension = Callable[[web.Application, DevServer], None]


def _installers() -> list[Extension]:
    """Each capability's server side: a module with ``install(app, devserver)``. Add yours here."""
    from . import derp, gitauth, identity, reinit, rpc

    return [identity.install, gitauth.install, reinit.install, rpc.install, derp.install]
