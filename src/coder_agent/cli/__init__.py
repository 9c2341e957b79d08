"""The ``coder-agent`` command line.

Rules: each subcommand is a module in this package with ``register(subparsers)`` and
``run(args) -> int``; modules are imported only when their subcommand runs, so
``coder-agent --version`` stays light. User errors print one line and exit 78 (configuration)
or 1..; never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from .. import __version__

TYPE_CHECKING = False  # not typing's: importing typing costs --version a few ms (mypy reads this name the same)

if TYPE_CHECKING:
    import argparse

__all__ = ["main"]

# name -> (module, one-line help). Add a capability's subcommand here.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("coder_agent.cli.run", "run the daemon"),
    "demo": ("coder_agent.cli.demo", "run the daemon against a local dev control plane and show what it sees"),
    "status": ("coder_agent.cli.status", "show the running daemon's status"),
    "version": ("coder_agent.cli.version", "print the version"),
    "config": ("coder_agent.cli.configcmd", "configuration tools (config check)"),
    "app-status": ("coder_agent.cli.appstatus", "report what a tool in the workspace is doing to Coder"),
    "git-askpass": ("coder_agent.cli.gitaskpass", "GIT_ASKPASS helper: git credentials from Coder external auth"),
    "gitssh": ("coder_agent.cli.gitssh", "GIT_SSH_COMMAND wrapper: ssh with the Coder-managed Git SSH key"),
    "env": ("coder_agent.cli.envcmd", "print the daemon's environment for scripts as export lines"),
    "ports": ("coder_agent.cli.ports", "list the ports the workspace listens on (--watch to follow)"),
    "devcontainers": ("coder_agent.cli.devcontainers", "list, recreate or delete dev containers"),
    "log": ("coder_agent.cli.log", "run a command (or read stdin) and ship its output as a named log source"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    import argparse  # not for --version: ~6 ms of its 2x budget over `python -c pass`

    parser = argparse.ArgumentParser(prog="coder-agent", description="Coder workspace agent (Python).")
    parser.add_argument("--version", action="version", version=f"coder-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        mod = importlib.import_module(module)
        mod.register(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list in (["--version"], ["version"]):
        print(f"coder-agent {__version__}")
        return 0
    first = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(only=first if first in COMMANDS else None)
    args = parser.parse_args(args_list)
    if not args.command:
        parser.print_help()
        return 2
    mod = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(mod.run(args))
    except KeyboardInterrupt:
        return 130
