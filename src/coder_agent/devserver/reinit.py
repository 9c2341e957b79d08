"""GET /api/v2/workspaceagents/me/reinit: coderd's prebuild-claim stream, and controls for tests.

coderd's behaviour reproduced (coder-agent-http.md §3):

* Headers ``Content-Type: text/event-stream``, ``Cache-Control: no-cache``,
  ``Connection: keep-alive``, ``X-Accel-Buffering: no``; ``event: ping`` + blank line every
  ``ping_interval`` seconds (15 s like coderd; tests shorten it); an event is ``event: data``,
  ``data: <compact JSON>``, blank line, with ``{"workspace_id", "reason", "owner_id"}``
  (``workspaceID`` instead when ``legacy_keys``; ``owner_id`` omitted when empty).
* A workspace that is not a prebuild answers **409**. Agents are *not* prebuilds unless marked
  (``mark_prebuild(agent)`` or ``agent.extra["prebuild"] = True``) — the common case in coderd,
  and it keeps every other test's daemon from holding a stream open.
* After a claim, every new connection gets the claim event first (pre-seeded, as coderd does
  since PR #23108); connected watchers get it at once. The claim rotates what a new session
  sees: the agent's ``owner_id`` becomes the new owner (the token stays the same).

Controls (in-process: :func:`hub`; over HTTP for other processes):

* ``POST /devserver/reinit/claim`` ``{"owner_id"?, "agent_id"?}`` → the event sent.
* ``POST /devserver/reinit/settings`` ``{"prebuild"?, "silent"?, "ping_interval"?, "legacy_keys"?}``.
* ``POST /devserver/reinit/drop`` → abort every open stream (no clean end).
* ``GET /devserver/reinit`` → connections, open streams, events sent, claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .app import DevServer, agent_of, coder_error
from .state import DevAgent

__all__ = ["ReinitHub", "claim", "hub", "install", "mark_prebuild"]

PREBUILD_CLAIMED = "prebuild_claimed"
_HUBS: weakref.WeakKeyDictionary[DevServer, ReinitHub] = weakref.WeakKeyDictionary()
_DROP = object()
_CLOSE = object()


def mark_prebuild(agent: DevAgent, prebuild: bool = True) -> None:
    agent.extra["prebuild"] = prebuild


@dataclass
class _Stream:
    agent_id: str
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


@dataclass
class ReinitHub:
    ds: DevServer
    ping_interval: float = 15.0
    silent: bool = False  # stop sending pings (a stalled proxy)
    legacy_keys: bool = False  # send "workspaceID" like the older SDK
    streams: list[_Stream] = field(default_factory=list)
    connections: int = 0
    pings_sent: int = 0
    events_sent: int = 0
    claims: dict[str, dict[str, str]] = field(default_factory=dict)  # agent id → pre-seeded event

    def _agent(self, agent_id: str | None) -> DevAgent:
        if agent_id is None:
            return self.ds.agent
        for a in self.ds.state.agents:
            if a.id == agent_id:
                return a
        raise KeyError(agent_id)

    def event_for(self, agent: DevAgent, owner_id: str) -> dict[str, str]:
        ev = {"workspaceID" if self.legacy_keys else "workspace_id": agent.workspace_id, "reason": PREBUILD_CLAIMED}
        if owner_id:
            ev["owner_id"] = owner_id
        return ev

    def claim(self, owner_id: str | None = None, agent_id: str | None = None) -> dict[str, str]:
        """Claim the workspace for ``owner_id`` (a new UUID by default): tell every open stream
        and pre-seed the event for every later connection."""
        agent = self._agent(agent_id)
        owner = owner_id if owner_id is not None else str(uuid.uuid4())
        if owner:
            agent.owner_id = owner
        ev = self.event_for(agent, owner)
        self.claims[agent.id] = ev
        for s in self.streams:
            if s.agent_id == agent.id:
                s.queue.put_nowait(ev)
        return ev

    def send_raw(self, wire: bytes, agent_id: str | None = None) -> int:
        """Write ``wire`` as-is to the agent's open streams (error events, odd payloads)."""
        agent = self._agent(agent_id)
        n = 0
        for s in self.streams:
            if s.agent_id == agent.id:
                s.queue.put_nowait(wire)
                n += 1
        return n

    def drop_streams(self) -> int:
        """Abort every open stream (connection reset, no clean end). Returns how many."""
        for s in self.streams:
            s.queue.put_nowait(_DROP)
        return len(self.streams)

    def close_streams(self) -> None:
        for s in self.streams:
            s.queue.put_nowait(_CLOSE)

    def summary(self) -> dict[str, Any]:
        return {"connections": self.connections, "open_streams": len(self.streams), "pings_sent": self.pings_sent,
                "events_sent": self.events_sent, "claims": self.claims, "silent": self.silent,
                "ping_interval": self.ping_interval}

    # the route ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        agent = agent_of(request)
        if not agent.extra.get("prebuild", False):
            return coder_error(409, "Workspace is not a prebuilt workspace.",
                               "Only workspaces created as prebuilds can be reinitialized.")
        resp = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "Connection": "keep-alive", "X-Accel-Buffering": "no",
        })
        stream = _Stream(agent.id)
        self.streams.append(stream)
        self.connections += 1
        await self.ds.notify()
        try:
            await resp.prepare(request)
            if agent.id in self.claims:  # pre-seeded, like coderd after PR #23108
                stream.queue.put_nowait(self.claims[agent.id])
            await self._serve(request, resp, stream)
        except ConnectionError:
            pass  # the watcher went away mid-write: what coderd sees every time an agent restarts
        finally:
            self.streams.remove(stream)
            await self.ds.notify()
        return resp

    async def _serve(self, request: web.Request, resp: web.StreamResponse, stream: _Stream) -> None:
        while True:
            try:
                item = await asyncio.wait_for(stream.queue.get(), self.ping_interval)
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    return  # the watcher went away (noticed even when silent)
                if not self.silent:
                    await resp.write(b"event: ping\n\n")
                    self.pings_sent += 1
                continue
            if item is _CLOSE:
                with contextlib.suppress(ConnectionError):
                    await resp.write_eof()
                return
            if item is _DROP:
                if request.transport is not None:
                    request.transport.abort()  # a reset, not a clean end of the chunked body
                return
            if isinstance(item, bytes):
                await resp.write(item)
                continue
            data = json.dumps(item, separators=(",", ":"))
            await resp.write(f"event: data\ndata: {data}\n\n".encode())
            self.events_sent += 1
            await self.ds.notify()


def hub(ds: DevServer) -> ReinitHub:
    """The reinit side of ``ds`` (created on first use, kept across app rebuilds)."""
    h = _HUBS.get(ds)
    if h is None:
        h = _HUBS[ds] = ReinitHub(ds)
    return h


def claim(ds: DevServer, owner_id: str | None = None, agent_id: str | None = None) -> dict[str, str]:
    return hub(ds).claim(owner_id, agent_id)


def install(app: web.Application, ds: DevServer) -> None:
    h = hub(ds)

    async def on_shutdown(app: web.Application) -> None:
        h.close_streams()

    async def ctl_claim(request: web.Request) -> web.Response:
        body = await _body(request)
        try:
            ev = h.claim(_opt_str(body, "owner_id"), _opt_str(body, "agent_id"))
        except KeyError:
            return coder_error(404, "No such agent.")
        return web.json_response(ev)

    async def ctl_settings(request: web.Request) -> web.Response:
        body = await _body(request)
        for key in ("prebuild", "silent", "legacy_keys"):
            if key in body and not isinstance(body[key], bool):
                return coder_error(400, "Validation failed.", validations=[{"field": key, "detail": "not a bool"}])
        if "ping_interval" in body:
            pi = body["ping_interval"]
            if not isinstance(pi, int | float) or isinstance(pi, bool) or pi <= 0:
                return coder_error(400, "Validation failed.",
                                   validations=[{"field": "ping_interval", "detail": "must be > 0"}])
            h.ping_interval = float(pi)
        if "silent" in body:
            h.silent = body["silent"]
        if "legacy_keys" in body:
            h.legacy_keys = body["legacy_keys"]
        if "prebuild" in body:
            for a in ds.state.agents:
                mark_prebuild(a, body["prebuild"])
        return web.json_response(h.summary())

    async def ctl_drop(request: web.Request) -> web.Response:
        return web.json_response({"dropped": h.drop_streams()})

    async def ctl_state(request: web.Request) -> web.Response:
        return web.json_response(h.summary())

    app.on_shutdown.append(on_shutdown)
    r = app.router
    r.add_get("/api/v2/workspaceagents/me/reinit", h.handle)
    r.add_post("/devserver/reinit/claim", ctl_claim)
    r.add_post("/devserver/reinit/settings", ctl_settings)
    r.add_post("/devserver/reinit/drop", ctl_drop)
    r.add_get("/devserver/reinit", ctl_state)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"message": "Request body must be valid JSON."}),
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"message": "Request body must be a JSON object."}),
                                 content_type="application/json")
    return body


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    v = body.get(key)
    return v if isinstance(v, str) else None
