"""The Go agent's container routes on the local API (``/api/v0/containers``).

Rules: paths, status codes and JSON follow ``agent/agentcontainers/api.go``: list (label
filters, malformed → 400), watch (websocket: the full list on connect and after every change;
client messages ignored; heartbeat pings), recreate (404 / 409 / 202 at once), delete (404 /
409 / 204, 500 with the reason when a step fails). With the feature disabled every container
route answers 403 "Dev Container feature not enabled."; inside a sub-agent (manifest
``parent_id`` set) 403 "Dev Container feature not supported.".
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from ..localapi import json_response
from ..localapi.server import HTTPResponseError
from ..tasks import reap
from .manager import DevcontainerManager, NotFound
from .model import LabelFilterError, parse_label_filters
from .status import Refused

__all__ = ["disabled_routes", "routes"]

FIRST_SCAN_WAIT = 10.0
HEARTBEAT = 15.0
Route = tuple[str, str, Callable[[web.Request], Any]]

DISABLED_MESSAGE = "Dev Container feature not enabled."
DISABLED_DETAIL = "To enable this feature, set CODER_AGENT_DEVCONTAINERS_ENABLE=true in your template."


def disabled_routes() -> list[Route]:
    async def forbidden(request: web.Request) -> web.Response:
        raise HTTPResponseError(403, DISABLED_MESSAGE, DISABLED_DETAIL)

    return [("*", "/api/v0/containers", forbidden), ("*", "/api/v0/containers/{tail:.*}", forbidden)]


def routes(mgr: DevcontainerManager, manifest: Callable[[], dict[str, Any] | None]) -> list[Route]:
    def guard() -> None:
        m = manifest() or {}
        if m.get("parent_id"):
            raise HTTPResponseError(403, "Dev Container feature not supported.",
                                    "Dev Container integration inside other Dev Containers is explicitly not "
                                    "supported.")

    async def list_(request: web.Request) -> web.Response:
        guard()
        try:
            labels = parse_label_filters(request.query.getall("label", []))
        except LabelFilterError as e:
            raise HTTPResponseError(400, "Invalid label filter.", str(e),
                                    [{"field": "label", "detail": str(e)}]) from None
        await mgr.wait_first_scan(FIRST_SCAN_WAIT)
        return json_response(mgr.response(labels))

    async def watch(request: web.Request) -> web.StreamResponse:
        guard()
        await mgr.wait_first_scan(FIRST_SCAN_WAIT)
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, compress=True)
        await ws.prepare(request)

        async def drain_client() -> None:
            async for msg in ws:  # client messages are ignored
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break

        reader = asyncio.create_task(drain_client())
        last = ""
        seen = -1
        try:
            while not ws.closed and not reader.done():
                gen = mgr.generation
                doc = json.dumps(mgr.response(), separators=(",", ":"))
                if doc != last:
                    await ws.send_str(doc)
                    last = doc
                seen = gen
                waiter = asyncio.create_task(mgr.wait_change(seen))
                await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            await reap(reader)
            await ws.close()
        return ws

    async def recreate(request: web.Request) -> web.Response:
        guard()
        await mgr.wait_first_scan(FIRST_SCAN_WAIT)
        dc_id = request.match_info["devcontainer"]
        try:
            d = await mgr.recreate(dc_id)
        except NotFound:
            raise HTTPResponseError(404, "Devcontainer not found.",
                                    f"Could not find devcontainer with ID: {dc_id!r}") from None
        except Refused as e:
            raise HTTPResponseError(409, "Unable to recreate transitioning devcontainer",
                                    f"Devcontainer {dc_id!r} is currently {e.status.value} and cannot be "
                                    "restarted.") from None
        detail = f"Recreation process for devcontainer {d.name!r} has started."
        if mgr.cli is None:
            detail += " The Dev Containers CLI is not installed: the container is recreated from its current " \
                      "configuration and lifecycle commands will not run."
        return json_response({"message": "Devcontainer recreation initiated", "detail": detail}, 202)

    async def delete(request: web.Request) -> web.Response:
        guard()
        await mgr.wait_first_scan(FIRST_SCAN_WAIT)
        dc_id = request.match_info["devcontainer"]
        try:
            await mgr.delete(dc_id)
        except NotFound:
            raise HTTPResponseError(404, "Devcontainer not found.",
                                    f"Could not find devcontainer with ID: {dc_id!r}") from None
        except Refused as e:
            raise HTTPResponseError(409, "Unable to delete transitioning devcontainer",
                                    f"Devcontainer {dc_id!r} is currently {e.status.value} and cannot be "
                                    "deleted.") from None
        except RuntimeError as e:
            raise HTTPResponseError(500, "An error occurred deleting the devcontainer.", str(e)) from None
        return web.Response(status=204)

    return [
        ("GET", "/api/v0/containers", list_),
        ("GET", "/api/v0/containers/", list_),
        ("GET", "/api/v0/containers/watch", watch),
        ("POST", "/api/v0/containers/devcontainers/{devcontainer}/recreate", recreate),
        ("DELETE", "/api/v0/containers/devcontainers/{devcontainer}", delete),
        ("DELETE", "/api/v0/containers/devcontainers/{devcontainer}/", delete),
    ]
