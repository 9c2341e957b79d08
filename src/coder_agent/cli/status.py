"""``coder-agent status``: what the running daemon reports at ``GET /api/v0/status``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .common import api_address_arg, local_client


def register(p: argparse.ArgumentParser) -> None:
    api_address_arg(p)
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.add_argument("--retry-now", action="store_true",
                   help="make the daemon retry the control-plane connection now (skip the backoff), then "
                        "print the status")


def render(st: dict[str, Any]) -> str:
    cp = st.get("control_plane", {})
    auth = st.get("auth", {})
    lines = [
        f"coder-agent {st.get('version')}  pid {st.get('pid')}  up {st.get('uptime_seconds', 0):.0f}s",
        f"coderd        {st.get('agent_url')}",
        f"connection    {cp.get('state')}" + (f" (since {cp.get('since')})" if cp.get("since") else ""),
        f"auth          {auth.get('method')}; token obtained {auth.get('token_obtained_at') or 'never'}",
        f"lifecycle     {st.get('lifecycle')}",
    ]
    if st.get("wakeups_per_minute") is not None:
        lines.append(f"wake-ups      {st['wakeups_per_minute']} in the last minute")
    rpc = st.get("agent_rpc")
    if rpc:
        state = "connected" if rpc.get("connected") else "not connected"
        lines.append(f"agent RPC     API {rpc.get('api_version')}; {state}; connections {rpc.get('connections')}")
        m = rpc.get("manifest")
        lines.append("manifest      " + ("not received yet" if not m else
                     f"{m['agent_name']} in {m['workspace']} ({m['directory']}); {m['apps']} apps, "
                     f"{m['scripts']} scripts, {m['metadata']} metadata, {m['devcontainers']} devcontainers"))
        if rpc.get("unavailable_rpcs"):
            lines.append(f"unavailable   {', '.join(rpc['unavailable_rpcs'])} (older coderd)")
    if cp.get("last_error"):
        lines.append(f"last error    {cp['last_error']} (at {cp.get('last_error_at')})")
    if auth.get("last_error"):
        lines.append(f"auth error    {auth['last_error']}")
    lines.append("services:")
    for name, h in sorted(st.get("services", {}).items()):
        msg = f"  {h.get('message')}" if h.get("message") else ""
        lines.append(f"  {name:<16}{h.get('state')}{msg}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..localapi.client import LocalAPIUnavailable

    try:
        with local_client(args) as c:
            if args.retry_now:
                c.request("POST", "/api/v0/retry")
                print("coder-agent: retrying the control-plane connection now", file=sys.stderr)
            resp = c.request("GET", "/api/v0/status")
    except LocalAPIUnavailable as e:
        print(f"coder-agent: {e}", file=sys.stderr)
        return 1
    st = resp.json()
    print(json.dumps(st, indent=2) if args.json else render(st))
    return 0
