"""``coder-agent app-status``: tell Coder what a tool in the workspace is doing.

Hands the status to the running daemon (``POST /api/v0/app-status``), which validates it as
coderd does, keeps it across restarts and delivers it with retries; no token is needed here.

Exit codes: 0 accepted (with ``--wait``: delivered); 2 refused as invalid (the daemon's
message names the field); 1 the daemon cannot be reached, or with ``--wait`` coderd refused the
status; 3 ``--wait`` ran out of ``--timeout`` while the status was still pending.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from .common import api_address_arg, local_client

EXIT_ACCEPTED = 0
EXIT_UNREACHABLE = 1
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_TIMEOUT = 3
SLUG_ENV = "CODER_MCP_APP_STATUS_SLUG"  # what Coder's MCP server and registry modules set
POLL = 30.0


def _duration(text: str) -> float:
    from .demo import parse_duration

    return parse_duration(text)


def register(p: argparse.ArgumentParser) -> None:
    api_address_arg(p)
    p.add_argument("--slug", default=os.environ.get(SLUG_ENV) or None,
                   help=f"the coder_app slug this status is for (default: ${SLUG_ENV})")
    p.add_argument("--state", required=True, help="working, idle, complete or failure")
    p.add_argument("--message", default="", help="what is happening (at most 160 bytes of UTF-8)")
    p.add_argument("--uri", default="", help="a link for the status (e.g. a pull request)")
    p.add_argument("--wait", action="store_true", help="exit once delivered to Coder (1 if Coder refused it)")
    p.add_argument("--timeout", type=_duration, default=None,
                   help="with --wait: give up after this long (e.g. 30s), exit 3 (default: wait until done)")
    p.add_argument("--json", action="store_true", help="print the daemon's JSON answer")


def _err(text: str) -> None:
    print(f"coder-agent: {text}", file=sys.stderr)


def _explain(body: Any, status: int) -> str:
    if not isinstance(body, dict):
        return f"HTTP {status}"
    text = str(body.get("message") or f"HTTP {status}")
    for v in body.get("validations") or []:
        text += f" ({v.get('field')}: {v.get('detail')})"
    if not body.get("validations") and body.get("detail"):
        text += f" ({body['detail']})"
    return text


def _json(resp: Any) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def run(args: argparse.Namespace) -> int:
    from ..localapi.client import LocalAPIUnavailable

    if not args.slug:
        _err(f"app status refused: --slug is required (or set {SLUG_ENV})")
        return EXIT_INVALID
    body = {"app_slug": args.slug, "state": args.state, "message": args.message, "uri": args.uri}
    try:
        with local_client(args) as c:
            resp = c.request("POST", "/api/v0/app-status", json_body=body)
            answer = _json(resp)
            if resp.status_code == 400:
                _err(f"app status refused: {_explain(answer, 400)}")
                return EXIT_INVALID
            if resp.status_code != 202 or not isinstance(answer, dict):
                _err(f"the daemon did not accept the app status: {_explain(answer, resp.status_code)}")
                return EXIT_UNREACHABLE
            if not args.wait:
                _print_accepted(args, answer)
                return EXIT_ACCEPTED
            return _wait(c, args, answer)
    except LocalAPIUnavailable as e:
        _err(str(e))
        return EXIT_UNREACHABLE


def _print_accepted(args: argparse.Namespace, answer: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(answer))
        return
    how = " (same as the last one; not sent again)" if answer.get("duplicate") else (
        " (merged with a newer status of the same state)" if answer.get("coalesced") else "")
    print(f"app status {answer.get('state')} for {answer.get('app_slug')} accepted: "
          f"{answer.get('delivery')}{how}")


def _wait(c: Any, args: argparse.Namespace, answer: dict[str, Any]) -> int:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    out = answer
    while out.get("delivery") == "pending":
        step = POLL if deadline is None else min(POLL, deadline - time.monotonic())
        if step <= 0:
            if args.json:
                print(json.dumps(out))
            _err(f"app status still pending after {args.timeout:g}s"
                 + (f"; last error: {out['error']}" if out.get("error") else ""))
            return EXIT_TIMEOUT
        resp = c.request("GET", "/api/v0/app-status", params={"id": answer["id"], "wait": f"{step:.3f}"},
                         timeout=step + 10)
        got = _json(resp)
        if resp.status_code != 200 or not isinstance(got, dict):
            _err(f"cannot follow the app status: {_explain(got, resp.status_code)}")
            return EXIT_FAILED
        out = got
    if args.json:
        print(json.dumps(out))
    if out.get("delivery") == "delivered":
        if not args.json:
            print(f"app status {answer.get('state')} for {answer.get('app_slug')} delivered")
        return EXIT_ACCEPTED
    _err(f"app status {out.get('delivery')}: {out.get('error') or 'no reason given'}")
    return EXIT_FAILED
