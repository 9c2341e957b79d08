"""The README documents every setting and the two set-up commands exist in the Makefile."""

from __future__ import annotations

from pathlib import Path

from coder_agent.cli import COMMANDS
from coder_agent.config import SETTINGS

ROOT = Path(__file__).resolve().parents[1]


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for s in SETTINGS:
        if s.env:
            assert f"`{s.env}`" in readme, s.env
        if s.flag:
            assert f"`{s.flag}`" in readme, s.flag


def test_readme_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "\ndemo:" in makefile and "\ntest:" in makefile
    for name in COMMANDS:
        assert f"coder-agent {name}" in readme, name


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
