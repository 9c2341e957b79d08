"""``coder-agent ports``: the ports the workspace listens on, as the running daemon reports them.

``--json`` prints the API's JSON (``{"ports": [...]}``); ``--watch`` follows
``/api/v0/listening-ports/watch`` and prints the list again on every change (with ``--json``:
one JSON document per line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from .common import api_address_arg, local_client


def register(p: argparse.ArgumentParser) -> None:
    api_address_arg(p)
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.add_argument("--watch", action="store_true", help="keep running; print the list again on every change")


def render(ports: list[dict[str, Any]]) -> str:
    if not ports:
        return "no listening ports"
    rows = [("PORT", "PROCESS", "NETWORK")]
    rows += [(str(p.get("port", "")), p.get("process_name") or "-", p.get("network", "")) for p in ports]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]}".rstrip() for r in rows)


def _error(body: Any, status: int) -> str:
    if isinstance(body, dict) and body.get("message"):
        detail = f": {body['detail']}" if body.get("detail") else ""
        return f"{body['message']}{detail}"
    return f"HTTP {status}"


def run(args: argparse.Namespace) -> int:
    if args.watch:
        return asyncio.run(_watch(args))
    from ..localapi.client import LocalAPIUnavailable

    try:
        with local_client(args) as c:
            resp = c.request("GET", "/api/v0/listening-ports")
    except LocalAPIUnavailable as e:
        print(f"coder-agent: {e}", file=sys.stderr)
        return 1
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code != 200 or not isinstance(body, dict):
        print(f"coder-agent: {_error(body, resp.status_code)}", file=sys.stderr)
        return 1
    print(json.dumps(body) if args.json else render(body.get("ports", [])))
    return 0


async def _watch(args: argparse.Namespace) -> int:
    import aiohttp

    from ..config import default_api_address

    address: str = args.api_address or default_api_address()
    path = "/api/v0/listening-ports/watch"
    if address.startswith("unix:"):
        connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=address[5:])
        url = f"http://coder-agent{path}"
    else:
        connector = aiohttp.TCPConnector()
        url = f"http://{address}{path}"
    try:
        async with aiohttp.ClientSession(connector=connector) as session, \
                session.ws_connect(url, heartbeat=30) as ws:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                body = json.loads(msg.data)
                if "ports" not in body:
                    print(f"coder-agent: {_error(body, 500)}", file=sys.stderr)
                    return 1
                if args.json:
                    print(json.dumps(body), flush=True)
                else:
                    print(render(body["ports"]) + "\n", flush=True)
    except (aiohttp.ClientError, OSError) as e:
        print(f"coder-agent: coder-agent is not answering at {address} ({type(e).__name__}: {e}); "
              "is the daemon running?", file=sys.stderr)
        return 1
    print("coder-agent: the daemon closed the watch", file=sys.stderr)
    return 1
