"""``coder-agent devcontainers list|recreate ID|delete ID [--json]``.

ID is a devcontainer id or name as ``list`` shows it; it is matched against the daemon's list,
never passed anywhere else. ``recreate`` follows the job on the watch websocket until the
devcontainer leaves ``starting`` (a progress line on a terminal, one line per change otherwise)
and exits 0 when it runs, 1 when it failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from ..config import default_api_address
from .common import api_address_arg, local_client

EXIT_FAIL = 1


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dc_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="list containers and dev containers")
    ls.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                    help="only containers with this label (repeatable)")
    rc = sub.add_parser("recreate", help="recreate (rebuild) a dev container and follow its progress")
    rc.add_argument("id", metavar="ID", help="devcontainer id or name")
    rc.add_argument("--no-follow", action="store_true", help="return once the recreate has started")
    rc.add_argument("--timeout", type=float, default=1800.0, help="seconds to follow (default 1800)")
    rm = sub.add_parser("delete", help="stop and remove a dev container's container")
    rm.add_argument("id", metavar="ID", help="devcontainer id or name")
    for q in (ls, rc, rm):
        api_address_arg(q)
        q.add_argument("--json", action="store_true", help="print JSON")


def _err(msg: str) -> int:
    print(f"coder-agent: {msg}", file=sys.stderr)
    return EXIT_FAIL


def _message(resp: Any) -> str:
    try:
        body = resp.json()
        return str(body.get("message", "")) + (f" ({body['detail']})" if body.get("detail") else "")
    except ValueError:
        return str(resp.text).strip()


def render(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    dcs = doc.get("devcontainers") or []
    lines.append(f"DEVCONTAINERS ({len(dcs)})")
    if dcs:
        lines.append(f"  {'NAME':<20} {'STATUS':<9} {'DIRTY':<5} {'CONTAINER':<24} {'ID':<36}  FOLDER")
    for d in dcs:
        c = d.get("container") or {}
        lines.append(f"  {d['name']:<20} {d['status']:<9} {'yes' if d.get('dirty') else '':<5} "
                     f"{(c.get('name') or '-'):<24} {d['id']:<36}  {d['workspace_folder']}")
        if d.get("error"):
            lines.append(f"    error: {d['error']}")
    cs = doc.get("containers") or []
    lines.append(f"CONTAINERS ({len(cs)})")
    if cs:
        lines.append(f"  {'NAME':<24} {'ID':<12} {'IMAGE':<28} {'STATUS':<22} PORTS")
    for c in cs:
        ports = ", ".join(f"{p.get('host_ip') or '*'}:{p['host_port']}->{p['port']}/{p['network']}"
                          for p in c.get("ports") or [])
        lines.append(f"  {c['name']:<24} {c['id'][:12]:<12} {c['image']:<28} {c['status']:<22} {ports}")
    for w in doc.get("warnings") or []:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def _resolve(doc: dict[str, Any], ident: str) -> dict[str, Any] | None:
    dcs = doc.get("devcontainers") or []
    for d in dcs:
        if d.get("id") == ident:
            return dict(d)
    named = [d for d in dcs if d.get("name") == ident]
    return dict(named[0]) if len(named) == 1 else None


def run(args: argparse.Namespace) -> int:
    from ..localapi.client import LocalAPIUnavailable

    try:
        with local_client(args) as c:
            params = [("label", lbl) for lbl in getattr(args, "label", [])]
            resp = c.request("GET", "/api/v0/containers", params=params or None)
            if resp.status_code != 200:
                return _err(_message(resp))
            doc = resp.json()
            if args.dc_command == "list":
                print(json.dumps(doc, indent=2) if args.json else render(doc))
                return 0
            d = _resolve(doc, args.id)
            if d is None:
                known = ", ".join(f"{x['name']} ({x['id']})" for x in doc.get("devcontainers") or []) or "none"
                return _err(f"no devcontainer with id or name {args.id!r}; known: {known}")
            if args.dc_command == "delete":
                resp = c.request("DELETE", f"/api/v0/containers/devcontainers/{d['id']}", timeout=120)
                if resp.status_code != 204:
                    return _err(f"delete failed: {_message(resp)}")
                print(json.dumps({"id": d["id"], "deleted": True}) if args.json else f"deleted {d['name']}")
                return 0
            return _recreate(c, args, d)
    except LocalAPIUnavailable as e:
        return _err(str(e))


def _recreate(c: Any, args: argparse.Namespace, d: dict[str, Any]) -> int:
    resp = c.request("POST", f"/api/v0/containers/devcontainers/{d['id']}/recreate")
    if resp.status_code != 202:
        return _err(f"recreate refused: {_message(resp)}")
    body = resp.json()
    if args.no_follow:
        print(json.dumps(body) if args.json else body.get("detail") or body.get("message"))
        return 0
    address = args.api_address or default_api_address()
    final = asyncio.run(_follow(address, d, args.timeout, quiet=args.json))
    if final is None:
        return _err(f"gave up following {d['name']} after {args.timeout:.0f} s (the recreate goes on)")
    if args.json:
        print(json.dumps(final, indent=2))
    elif final["status"] == "running":
        cont = (final.get("container") or {}).get("name", "?")
        print(f"{d['name']}: running in container {cont}")
        if final.get("error"):
            print(f"warning: {final['error']}")
    else:
        print(f"{d['name']}: {final['status']}: {final.get('error') or 'no details'}")
    return 0 if final["status"] == "running" else EXIT_FAIL


async def _follow(address: str, d: dict[str, Any], timeout: float, quiet: bool) -> dict[str, Any] | None:
    """Follow the watch socket until the devcontainer leaves ``starting``; its final JSON, or None."""
    import aiohttp

    if address.startswith("unix:"):
        connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=address[5:])
        url = "http://coder-agent/api/v0/containers/watch"
    else:
        connector = aiohttp.TCPConnector()
        url = f"http://{address}/api/v0/containers/watch"
    tty = sys.stderr.isatty() and not quiet
    spin = "|/-\\"
    start = time.monotonic()
    last_status = ""
    async with aiohttp.ClientSession(connector=connector) as session, session.ws_connect(url) as ws:
        try:
            async with asyncio.timeout(timeout):
                n = 0
                while True:
                    try:
                        msg = await ws.receive(timeout=0.2 if tty else None)
                    except TimeoutError:
                        n += 1
                        sys.stderr.write(f"\r{spin[n % 4]} {d['name']}: {last_status} "
                                         f"{time.monotonic() - start:5.1f}s")
                        sys.stderr.flush()
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        return None
                    cur = next((x for x in json.loads(msg.data).get("devcontainers") or []
                                if x.get("id") == d["id"]), None)
                    status = cur["status"] if cur else "removed"
                    if status != last_status and not quiet and not tty:
                        print(f"{d['name']}: {status} ({time.monotonic() - start:.1f}s)", file=sys.stderr)
                    last_status = status
                    if cur is not None and status != "starting":
                        if tty:
                            sys.stderr.write("\r\x1b[K")
                        return dict(cur)
        except TimeoutError:
            return None
