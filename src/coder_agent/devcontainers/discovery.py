"""Find devcontainer projects in the git repositories under the workspace directory.

Rules (the Go agent's): if the directory itself contains ``.git``, it is the one project root;
otherwise each direct subdirectory containing ``.git`` is one. In each root, the files git
would show (tracked, plus untracked that are not ignored: ``.gitignore``, ``.git/info/exclude``
and the global excludes are honoured) ending in ``.devcontainer/devcontainer.json`` or
``.devcontainer.json`` define a project whose workspace folder is the path before that suffix.
``git`` runs without a shell, with a timeout; a repository git cannot read is skipped with a
warning. :func:`projects_from_paths` is the pure part.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["discover", "projects_from_paths"]

_SUFFIXES = (".devcontainer/devcontainer.json", ".devcontainer.json")


def projects_from_paths(root: str, paths: list[str]) -> list[tuple[str, str]]:
    """Repository-relative paths → sorted (workspace_folder, config_path), both absolute."""
    out: set[tuple[str, str]] = set()
    root = root.rstrip("/") or "/"
    for rel in paths:
        for suffix in _SUFFIXES:
            if rel == suffix or rel.endswith("/" + suffix):
                prefix = rel[: -len(suffix)].rstrip("/")
                folder = f"{root}/{prefix}" if prefix else root
                out.add((folder, f"{root}/{rel}"))
                break
    return sorted(out)


def _roots(directory: Path) -> list[Path]:
    if (directory / ".git").exists():
        return [directory]
    try:
        return sorted(p for p in directory.iterdir() if p.is_dir() and (p / ".git").exists())
    except OSError:
        return []


def discover(directory: Path, timeout: float = 10.0) -> tuple[list[tuple[str, str]], list[str]]:
    """(projects, warnings). Blocking: call it from a thread."""
    git = shutil.which("git")
    if git is None:
        return [], ["devcontainer discovery is off: git is not installed"]
    projects: list[tuple[str, str]] = []
    warnings: list[str] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    for root in _roots(directory):
        try:
            res = subprocess.run(
                [git, "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                capture_output=True, timeout=timeout, env=env, check=False, stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            warnings.append(f"devcontainer discovery skipped {root}: {e}")
            continue
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip().splitlines()
            warnings.append(f"devcontainer discovery skipped {root}: {err[-1] if err else 'git failed'}")
            continue
        paths = [p for p in res.stdout.decode(errors="replace").split("\0") if p]
        projects.extend(p for p in projects_from_paths(str(root), paths) if os.path.isfile(p[1]))
    return projects, warnings
