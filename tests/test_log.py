"""The redactor scrubs secrets from every part of every event; Collapse says things once."""

from __future__ import annotations

import io
import json
from pathlib import Path

from coder_agent.log import Collapse, Redactor, configure_logging, get_logger

SECRET = "tok-5b9f2c4e-8d1a-4f6b"


def test_redactor_scrubs_console_json_and_file(tmp_path: Path) -> None:
    for fmt in ("console", "json"):
        stream = io.StringIO()
        log_file = tmp_path / f"{fmt}.log"
        r = configure_logging(fmt=fmt, level="debug", stream=stream, log_file=log_file)
        r.add(SECRET)
        log = get_logger("test")
        log.info(f"token is {SECRET}", header={"Coder-Session-Token": SECRET}, items=[SECRET, 1])
        try:
            raise RuntimeError(f"failed with {SECRET}")
        except RuntimeError:
            log.exception("boom")
        log.warning("err", error=ValueError(SECRET))
        out = stream.getvalue() + log_file.read_text()
        assert SECRET not in out, fmt
        assert out.count("[REDACTED]") >= 4
    marker, first = (json.loads(x) for x in log_file.read_text().splitlines()[:2])
    assert marker["event"].startswith("coder-agent process ")  # the restart marker comes first
    assert first["header"] == {"Coder-Session-Token": "[REDACTED]"}


def test_short_strings_are_not_treated_as_secrets() -> None:
    r = Redactor(["abc"])
    assert r.scrub("abc abc") == "abc abc"


class _Rec:
    def __init__(self) -> None:
        self.events: list[str] = []

    def warning(self, event: str, **kw: object) -> None:
        self.events.append(event)

    def info(self, event: str, **kw: object) -> None:
        self.events.append(event)


def test_collapse_says_once_then_on_change_then_on_recovery() -> None:
    rec = _Rec()
    c = Collapse(rec)
    assert c.error("down", "connect refused")
    assert not c.error("down", "connect refused")
    assert not c.error("down", "connect refused")
    assert c.error("down", "dns")
    c.ok("up")
    c.ok("up")
    assert rec.events == ["down", "down", "up"]
