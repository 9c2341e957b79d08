"""``coder-agent gitssh -- ARGS...``: GIT_SSH_COMMAND wrapper that adds the Coder-managed Git SSH
key to ``ssh`` (see :mod:`coder_agent.gitauth.helper` for the rules)."""

from __future__ import annotations

import argparse
import sys

from .common import api_address_arg, local_client

__all__ = ["register", "run"]


def register(p: argparse.ArgumentParser) -> None:
    api_address_arg(p)
    p.add_argument("ssh_args", nargs=argparse.REMAINDER, metavar="-- ARGS",
                   help="arguments for ssh, after --")


def run(args: argparse.Namespace) -> int:
    from ..gitauth.helper import run_gitssh

    ssh_args = list(args.ssh_args)
    if ssh_args[:1] == ["--"]:
        ssh_args = ssh_args[1:]
    if not ssh_args:
        print("usage: coder-agent gitssh -- [SSH ARGS] HOST [COMMAND]", file=sys.stderr)
        return 2
    with local_client(args) as client:
        return run_gitssh(ssh_args, client, err=sys.stderr)
