"""Parse what ``devcontainer up --log-format json`` prints. Pure: lines in, records out.

Rules (from @devcontainers/cli 0.89, checked on this testbed):

* stderr carries one JSON object per line: ``{"type", "level", "timestamp", "text"}``; types
  ``text``, ``raw`` (command output), ``start``/``stop`` (sub-steps), ``progress``. Levels:
  1 trace, 2 debug, 3 info, 4 warning, 5 error. Like the Go agent, lines of level >= 3 are the
  user's log; lower levels go to our debug log only. Text is stripped of ANSI escapes and CRs
  and split into lines; empty lines are dropped.
* stdout carries one JSON line at the end: ``{"outcome", "containerId", "message",
  "description", ...}``. ``outcome == "success"`` → done. ``"error"`` with a container id →
  the container exists but a lifecycle command failed (status running, error set). No
  container id → failed with the message.
* A line that is not JSON is passed through as info text (older CLIs, crashes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = ["LogRecord", "UpResult", "parse_log_line", "parse_result"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
# what is left of a broken escape sequence, and other C0 controls a log line must not carry
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LEVELS = {3: "info", 4: "warn", 5: "error"}


@dataclass(frozen=True)
class LogRecord:
    level: str  # info | warn | error | debug
    text: str
    user_visible: bool


def clean(text: str) -> list[str]:
    text = _CONTROL.sub("", _ANSI.sub("", text).replace("\r", ""))
    return [ln.rstrip() for ln in text.split("\n") if ln.strip()]


def parse_log_line(line: str) -> list[LogRecord]:
    """One stderr line → zero or more records (one per text line)."""
    line = line.strip()
    if not line:
        return []
    try:
        obj = json.loads(line)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return [LogRecord("info", t, True) for t in clean(line)]
    if obj.get("type") == "progress":
        return []
    try:
        level = int(obj.get("level") or 0)
    except (TypeError, ValueError):
        level = 0
    visible = level >= 3
    name = _LEVELS.get(level, "error" if level > 5 else "debug")
    return [LogRecord(name, t, visible) for t in clean(str(obj.get("text") or ""))]


@dataclass(frozen=True)
class UpResult:
    ok: bool  # a container is up (maybe with a lifecycle error)
    container_id: str
    error: str  # empty on full success


def parse_result(stdout_lines: list[str], returncode: int, last_error_text: str = "") -> UpResult:
    """Decide the outcome from stdout's last JSON line (and the exit code when there is none)."""
    for line in reversed(stdout_lines):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict) or "outcome" not in obj:
            continue
        cid = str(obj.get("containerId") or "")
        if obj.get("outcome") == "success":
            return UpResult(True, cid, "")
        msg = str(obj.get("message") or "").strip()
        desc = str(obj.get("description") or "").strip()
        text = msg or desc
        return UpResult(bool(cid), cid, text or "devcontainer up failed")
    why = f"devcontainer up exited with code {returncode} without a result"
    if last_error_text:
        why += f": {last_error_text}"
    return UpResult(False, "", why)
