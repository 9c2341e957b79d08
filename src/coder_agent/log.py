"""Logging: structlog for humans (console) or machines (JSON), plus a size-rotated file.

Rules:

* Every component gets a bound logger (``structlog.get_logger().bind(component=...)``).
* The :class:`Redactor` processor runs last before rendering and replaces every known secret
  (tokens, header values, session tokens obtained later) anywhere in the event, so no secret
  reaches stderr, the file or a test's captured output.
* :class:`Collapse` says a repeated error once, then once when it changes or recovers.
* The file (``coder-agent.log``) rotates at ``max_bytes``; backups are kept by age as well as
  by size (:mod:`coder_agent.retention`: at least ``backups``, more while younger than
  ``retention`` seconds and within 256 MiB), so a chatty day still leaves 24 h and more to debug.
  Each process first writes a "coder-agent process <pid> started" record: the restart marker.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import structlog

from .errors import REDACTED

__all__ = ["Collapse", "Redactor", "configure_logging", "get_logger"]



class Redactor:
    """A structlog processor that scrubs known secret values from every event."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        for s in secrets or []:
            self.add(s)

    def add(self, secret: str) -> None:
        # Very short strings would redact ordinary words; real tokens are long.
        if secret and len(secret) >= 6:
            with self._lock:
                self._secrets.add(secret)

    def scrub(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        return text

    def _walk(self, v: Any) -> Any:
        if isinstance(v, str):
            return self.scrub(v)
        if isinstance(v, dict):
            return {k: self._walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return type(v)(self._walk(x) for x in v)
        if isinstance(v, BaseException):
            return self.scrub(f"{type(v).__name__}: {v}")
        return v

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if not self._secrets:
            return event
        return {k: self._walk(v) for k, v in event.items()}


def configure_logging(
    *,
    fmt: str = "console",
    level: str = "info",
    log_file: Path | None = None,
    redactor: Redactor | None = None,
    stream: Any = None,
    max_bytes: int = 5 * 1024 * 1024,
    backups: int = 10,
    retention: float | None = None,
    extra_files: Mapping[str, Path | None] | None = None,
) -> Redactor:
    """Set up structlog and stdlib logging for the process. Returns the redactor in use.

    ``extra_files`` (Go's ``--log-human``/``--log-json``/``--log-stackdriver``): format name
    (``human``, ``json``, ``stackdriver``) → a file that gets every log line as well, appended.
    ``/dev/stderr`` for ``human`` is the stream already written. An OSError opening one carries
    ``setting`` (the variable naming it)."""
    redactor = redactor or Redactor()
    stream = stream or sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    json_renderer = structlog.processors.JSONRenderer()
    if fmt == "json":
        renderer: Any = json_renderer
    else:
        colors = hasattr(stream, "isatty") and stream.isatty()
        renderer = structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=structlog.dev.plain_traceback)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(processors=[
        structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer], foreign_pre_chain=shared))
    root.addHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        from .retention import DEFAULT_MAX_AGE, Retention

        keep = Retention(min_backups=backups, max_age=DEFAULT_MAX_AGE if retention is None else retention)
        fh = RetainingFileHandler(log_file, maxBytes=max_bytes, retention=keep, encoding="utf-8")
        fh.notice_stream = stream
        fh.setFormatter(structlog.stdlib.ProcessorFormatter(processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, json_renderer], foreign_pre_chain=shared))
        root.addHandler(fh)
    for kind, path in (extra_files or {}).items():
        if path is None or (kind == "human" and str(path) in ("/dev/stderr", "")):
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            xh = logging.FileHandler(path, encoding="utf-8")
        except OSError as e:
            e.setting = f"CODER_AGENT_LOGGING_{kind.upper()}"  # type: ignore[attr-defined]
            raise
        extra: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
        if kind == "stackdriver":
            extra.append(_stackdriver)
        extra.append(structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
                     if kind == "human" else json_renderer)
        xh.setFormatter(structlog.stdlib.ProcessorFormatter(processors=extra, foreign_pre_chain=shared))
        root.addHandler(xh)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    if log_file is not None:  # the restart marker, whatever the level
        fh.handle(logging.makeLogRecord({"name": "coder_agent", "levelno": logging.INFO, "levelname": "INFO",
                                         "msg": f"coder-agent process {os.getpid()} started; log file opened"}))
    for noisy in ("httpx", "httpcore", "aiohttp.access", "websockets", "asyncio", "docker", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return redactor


_SEVERITY = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "warn": "WARNING", "error": "ERROR",
             "critical": "CRITICAL", "exception": "ERROR"}


def _stackdriver(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Google Cloud Logging's structured JSON: ``severity``, ``message``, ``timestamp``."""
    out = dict(event)
    out["severity"] = _SEVERITY.get(str(out.pop("level", "info")).lower(), "DEFAULT")
    out["message"] = out.pop("event", "")
    return out


class _FileHandler(logging.handlers.RotatingFileHandler):
    """The daemon's log file. When it cannot be written (disk full) this says so once on the
    stream (stderr has every record anyway), not a traceback per record, and says so once again
    when the file works again."""

    notice_stream: Any = None
    _failing = False
    _err = False

    def emit(self, record: logging.LogRecord) -> None:
        self._err = False
        super().emit(record)
        if self._failing and not self._err:
            self._failing = False
            self._notice(f"coder-agent: writing {self.baseFilename} works again")

    def handleError(self, record: logging.LogRecord) -> None:
        self._err = True
        if not self._failing:
            self._failing = True
            exc = sys.exc_info()[1]
            self._notice(f"coder-agent: cannot write {self.baseFilename} ({exc}); "
                         "logging to stderr only until it works again")

    def _notice(self, text: str) -> None:
        stream = self.notice_stream or sys.stderr
        with contextlib.suppress(Exception):
            stream.write(text + "\n")
            stream.flush()


class RetainingFileHandler(_FileHandler):
    """A size-rotated file whose backups are kept by :class:`~coder_agent.retention.Retention`."""

    def __init__(self, filename: Path, *, maxBytes: int, retention: Any, encoding: str = "utf-8") -> None:
        from .retention import prune_set

        super().__init__(filename, maxBytes=maxBytes, backupCount=1, encoding=encoding)
        self.retention = retention
        self._kept = prune_set(Path(self.baseFilename), retention, time.time())

    def doRollover(self) -> None:
        from .retention import prune_set, rotate_set

        if self.stream:
            self.stream.close()
            self.stream = None
        path = Path(self.baseFilename)
        rotate_set(path, self._kept)
        self._kept = prune_set(path, self.retention, time.time(), self._kept + 1)
        if not self.delay:
            self.stream = self._open()


def get_logger(component: str, **ids: Any) -> Any:
    """A logger bound to ``component`` and its ids."""
    return structlog.get_logger("coder_agent").bind(component=component, **ids)


class Collapse:
    """Say a repeated condition once, then once when it changes, then once when it recovers."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._last: str | None = None
        self.repeats = 0

    def error(self, event: str, key: str, **kw: Any) -> bool:
        """Log ``event`` unless ``key`` equals the last one logged. Returns True when it logged."""
        if key == self._last:
            self.repeats += 1
            return False
        self._last = key
        self.repeats = 0
        self._log.warning(event, **kw)
        return True

    def ok(self, event: str, **kw: Any) -> None:
        if self._last is not None:
            self._log.info(event, after_repeats=self.repeats, **kw)
        self._last = None
        self.repeats = 0
