"""Helpers shared by subcommands: settings flags from the table, the one-line error exit,
finding the daemon's local API."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import SETTINGS, client_api_address

__all__ = ["add_settings_flags", "api_address_arg", "die_config", "flag_values", "local_client"]

EXIT_CONFIG = 78


def add_settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config file (env CODER_AGENT_CONFIG)")
    for s in SETTINGS:
        if s.flag is None:
            continue
        kw: dict[str, Any] = {"dest": f"setting_{s.field}", "default": None, "help": s.help}
        if s.kind == "map":
            kw.update(action="append", metavar="KEY=VALUE")
        elif s.kind == "bool":
            kw.update(nargs="?", const="true", metavar="BOOL")
        else:
            kw["metavar"] = s.field.upper()
        p.add_argument(s.flag, **kw)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    return {s.field: getattr(args, f"setting_{s.field}", None) for s in SETTINGS}


def die_config(message: str) -> int:
    print(f"coder-agent: configuration error: {message}", file=sys.stderr)
    return EXIT_CONFIG


def api_address_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api-address", dest="api_address", default=None,
                   help="where the daemon's local API listens (default: CODER_AGENT_API_ADDRESS or the "
                        "standard socket)")


def local_client(args: argparse.Namespace) -> Any:
    from ..localapi.client import LocalClient

    return LocalClient(args.api_address or client_api_address())
