from __future__ import annotations

import argparse

from .. import __version__


def register(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print(f"coder-agent {__version__}")
    return 0
