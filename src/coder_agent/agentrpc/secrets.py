"""Manifest secrets written to disk, as the Go agent's ``writeSecretFiles`` does.

Rules:

* Every secret with a ``file_path`` is written there before the start scripts run: ``~`` is the
  home directory, a relative path is taken under it; parent directories are created (0700), the
  file is replaced atomically (temp file, fsync, rename) with mode 0600. On every manifest, so a
  rotated value is picked up after a reconnect.
* Secrets with an ``env_name`` go to the commands' environment (:mod:`coder_agent.childenv`).
* Values never reach a log, an error or the local API: a failure names the path and the OS error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["secret_path", "write_secret_files"]


def secret_path(file_path: str, home: str) -> Path:
    p = file_path.strip()
    if p == "~" or p.startswith("~/"):
        p = home + p[1:]
    path = Path(p)
    return path if path.is_absolute() else Path(home) / path


def write_secret_files(secrets: Sequence[Mapping[str, Any]], home: str | None = None) -> list[tuple[str, str]]:
    """Write every file secret (``home``: default ``$HOME``); returns ``(path, error)`` for those
    that could not be written."""
    home = home or os.environ.get("HOME") or os.path.expanduser("~")
    failed: list[tuple[str, str]] = []
    for s in secrets:
        raw = str(s.get("file_path") or "")
        if not raw.strip():
            continue
        path = secret_path(raw, home)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, bytes(s.get("value", b"")))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp, 0o600)  # whatever the umask
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            failed.append((str(path), e.strerror or type(e).__name__))
    return failed
