"""Find devcontainer projects in the git repositories under the workspace directory.

Rules (the Go agent's): if the directory itself contains ``.git``, it is the one project root;
otherwise each direct subdirectory containing ``.git`` is one. In each root, the files git
would show (tracked, plus untracked that are not ignored: ``.gitignore``, ``.git/info/exclude``
and the global excludes are honoured) ending in ``.devcontainer/devcontainer.json`` or
``.devcontainer.json`` define a project whose workspace folder is the path before that suffix.
``git`` runs without a shell, with a timeout; a repository git cannot read is skipped with a
warning. :func:`projects_from_paths` and :func:`dirs_from_paths` are the pure parts.

:func:`scan` also returns the directories worth watching (the workspace directory, its direct
subdirectories but hidden ones, and every directory holding a file git shows), so the manager can learn of a
new or changed ``devcontainer.json`` through inotify instead of walking again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Found", "dirs_from_paths", "discover", "projects_from_paths", "scan"]

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


def dirs_from_paths(root: str, paths: list[str]) -> set[str]:
    """Every directory (absolute) holding one of the repository-relative ``paths``, and ``root``."""
    root = root.rstrip("/") or "/"
    rels: set[str] = set()
    for rel in paths:
        d = rel.rpartition("/")[0]
        while d and d not in rels:
            rels.add(d)
            d = d.rpartition("/")[0]
    return {root} | {f"{root}/{d}" for d in rels}


@dataclass
class Found:
    projects: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dirs: set[str] = field(default_factory=set)  # to watch


def _roots(directory: Path) -> list[Path]:
    if (directory / ".git").exists():
        return [directory]
    try:
        return sorted(p for p in directory.iterdir() if p.is_dir() and (p / ".git").exists())
    except OSError:
        return []


def discover(directory: Path, timeout: float = 10.0) -> tuple[list[tuple[str, str]], list[str]]:
    """(projects, warnings). Blocking: call it from a thread."""
    found = scan(directory, timeout)
    return found.projects, found.warnings


def scan(directory: Path, timeout: float = 10.0) -> Found:
    """Projects, warnings and the directories to watch. Blocking: call it from a thread."""
    out = Found()
    out.dirs.add(str(directory))
    try:
        # not hidden ones (~/.cache, ~/.local...): busy, and not where projects live
        out.dirs.update(str(p) for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        pass
    git = shutil.which("git")
    if git is None:
        out.warnings.append("devcontainer discovery is off: git is not installed")
        return out
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    for root in _roots(directory):
        try:
            res = subprocess.run(
                [git, "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                capture_output=True, timeout=timeout, env=env, check=False, stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            out.warnings.append(f"devcontainer discovery skipped {root}: {e}")
            continue
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip().splitlines()
            out.warnings.append(f"devcontainer discovery skipped {root}: {err[-1] if err else 'git failed'}")
            continue
        paths = [p for p in res.stdout.decode(errors="replace").split("\0") if p]
        out.projects.extend(p for p in projects_from_paths(str(root), paths) if os.path.isfile(p[1]))
        out.dirs |= dirs_from_paths(str(root), paths)
    return out
