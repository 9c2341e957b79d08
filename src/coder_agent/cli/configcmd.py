"""``coder-agent config check``: validate and print the effective configuration, secrets redacted."""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from .common import add_settings_flags, die_config, flag_values


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="validate the configuration and print it with secrets redacted")
    check.add_argument("--json", action="store_true", help="print JSON")
    add_settings_flags(check)


def run(args: argparse.Namespace) -> int:
    from ..config import load_settings, redacted_view

    try:
        settings = load_settings(flag_values(args), config_file=args.config)
    except ConfigError as e:
        return die_config(str(e))
    view = redacted_view(settings)
    if args.json:
        print(json.dumps(view, indent=2, sort_keys=True))
    else:
        for key in sorted(view):
            print(f"{key} = {json.dumps(view[key])}")
        print("configuration OK")
    return 0
