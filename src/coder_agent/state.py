"""Small durable state: one JSON document per key in the state dir, written atomically.

Rules: write to a temp file in the same directory, fsync it, rename over the target, fsync
the directory. A crash leaves either the old or the new document, never a torn one. A corrupt
document is moved aside (``.corrupt``) and reads as absent, with a warning: state is an
optimisation of delivery, never a reason not to start.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from .log import get_logger

__all__ = ["StateStore"]

_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._log = get_logger("state")

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or key.startswith("."):
            raise ValueError(f"bad state key {key!r}")
        return self.directory / f"{key}.json"

    def get(self, key: str, default: Any = None) -> Any:
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as e:
            self._log.warning("state document unreadable; moved aside", key=key, error=str(e))
            try:
                path.replace(path.with_suffix(".corrupt"))
            except OSError:
                pass
            return default

    def put(self, key: str, value: Any) -> None:
        path = self._path(key)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        dfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass
