"""``coder-agent env``: the environment the daemon gives its scripts (GIT_ASKPASS,
GIT_SSH_COMMAND, CODER_AGENT_API_ADDRESS, ...) as ``export K=V`` lines for a shell to eval:
``eval "$(coder-agent env)"``."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys

from .common import api_address_arg, local_client

__all__ = ["format_exports", "register", "run"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON object instead")
    api_address_arg(p)


def format_exports(env: dict[str, str]) -> str:
    """``export K=V`` lines, values shell-quoted; names a shell cannot export are skipped."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()) if _NAME.match(k))


def run(args: argparse.Namespace) -> int:
    from ..gitauth.helper import HelperError, get_json

    with local_client(args) as client:
        try:
            status, body = get_json(client, "/api/v0/env")
        except HelperError as e:
            print(f"coder-agent env: {e}", file=sys.stderr)
            return 1
    env = body.get("env") if status == 200 else None
    if not isinstance(env, dict):
        print(f"coder-agent env: the daemon answered {status}: {body.get('message', '')}", file=sys.stderr)
        return 1
    env = {str(k): str(v) for k, v in env.items()}
    sys.stdout.write(json.dumps(env, indent=2) + "\n" if args.json else format_exports(env))
    return 0
