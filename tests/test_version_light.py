"""``coder-agent --version`` stays light: it imports neither argparse nor typing (issue 24's
``--version`` ≤ 2x ``python -c pass``; each is several ms on a loaded machine)."""

from __future__ import annotations

import subprocess
import sys

from coder_agent import __version__

from .conftest import t


def test_version_imports_no_argparse_or_typing() -> None:
    code = ("import sys; sys.argv = ['coder-agent', '--version']\n"
            "from coder_agent.cli import main\n"
            "rc = main()\n"
            "print(rc, 'argparse' in sys.modules, 'typing' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=t(30))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"coder-agent {__version__}", "0 False False"]
