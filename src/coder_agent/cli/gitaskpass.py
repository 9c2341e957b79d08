"""``coder-agent git-askpass PROMPT``: git's GIT_ASKPASS helper, answered from Coder external auth
through the daemon (see :mod:`coder_agent.gitauth.helper` for the rules)."""

from __future__ import annotations

import argparse
import sys

from .common import api_address_arg, local_client

__all__ = ["register", "run"]


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help="the prompt git passes (\"Username for 'https://host': \")")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                   help="how long to wait for you to link the provider in Coder "
                        "(default: CODER_AGENT_GIT_ASKPASS_TIMEOUT or 600)")
    api_address_arg(p)


def run(args: argparse.Namespace) -> int:
    from ..gitauth.helper import run_askpass, wait_bound

    wait = args.wait if args.wait and args.wait > 0 else wait_bound()
    with local_client(args) as client:
        return run_askpass(args.prompt, client, wait=wait, out=sys.stdout, err=sys.stderr)
