"""Local history by age as well as size: the pure rule, per-source files and the daemon's own log,
with real files and real mtimes."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from coder_agent.config import load_settings
from coder_agent.errors import ConfigError
from coder_agent.log import configure_logging, get_logger
from coder_agent.logs.files import Reader, SourceFile
from coder_agent.retention import Retention

DAY = 86400.0
NOW = 1_000_000_000.0


def test_keep_rule() -> None:
    r = Retention(min_backups=2, max_age=DAY, max_total=1000)
    young, old = NOW - 3600, NOW - 2 * DAY
    assert r.keep([(100, old)] * 3, active_size=0, now=NOW) == 2  # the floor survives any age
    assert r.keep([(100, young)] * 8, active_size=0, now=NOW) == 8  # young: more than the floor
    assert r.keep([(100, young)] * 3 + [(100, old)] + [(100, young)], 0, NOW) == 3  # the first old one ends it
    assert r.keep([(300, young)] * 5, active_size=100, now=NOW) == 3  # 100 + 3 * 300 <= 1000 < 1300
    assert r.keep([(5000, young)] * 3, active_size=0, now=NOW) == 2  # over budget: only the floor
    assert Retention.count(3).keep([(1, young)] * 5, 0, NOW) == 3  # size-only: exactly n
    assert Retention(min_backups=0, max_backups=4).keep([(1, young)] * 9, 0, NOW) == 4


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_source_file_keeps_a_busy_day_and_drops_old_backups(tmp_path: Path) -> None:
    p = tmp_path / "s.log"
    for k in range(1, 6):  # five backups from last month
        p.with_name(f"s.log.{k}").write_text(f"old {k}\n")
        _age(p.with_name(f"s.log.{k}"), 30 * DAY + k)
    keep = Retention(min_backups=2, max_age=DAY, max_total=10_000)
    sf = SourceFile(p, max_bytes=100, retention=keep, marker="restarted")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.log", "s.log.1", "s.log.2"]  # pruned at open
    r = Reader(sf, sf.total)
    lines = [f"line {i:04d}".encode() for i in range(200)]  # ~2 KB: 20 rotations within the hour
    got = []
    for ln in lines:
        sf.write(ln + b"\n")
        while (x := r.next_line()) is not None:
            got.append(x[0])
    assert got == lines
    names = {x.name for x in tmp_path.iterdir()}
    assert len(names) > 20 and "s.log.20" in names  # far more than a size-only rule with 2 backups
    assert not any((tmp_path / n).read_text().startswith("old") for n in names)  # last month's are gone
    # positions still map back after rotations under the new numbering
    ino, off = sf.disk_position(sf.total - 10)
    assert sf.locate(ino, off) == sf.total - 10
    sf.close()
    # the byte budget bounds a runaway source even within the window
    small = Retention(min_backups=1, max_age=DAY, max_total=500)
    sf2 = SourceFile(tmp_path / "b.log", max_bytes=100, retention=small)
    for ln in lines:
        sf2.write(ln + b"\n")
    sf2.close()
    assert sum(x.stat().st_size for x in tmp_path.glob("b.log*")) <= 500 + 100


def test_source_file_restart_marker_survives(tmp_path: Path) -> None:
    p = tmp_path / "s.log"
    sf = SourceFile(p, max_bytes=1 << 20, retention=Retention())
    sf.write(b"2026-01-01T00:00:00.000000Z info a\n")
    sf.close()
    sf = SourceFile(p, max_bytes=1 << 20, retention=Retention(), marker="coder-agent pid 7 started")
    sf.close()
    assert p.read_text().splitlines()[-1] == "# coder-agent pid 7 started"


def test_daemon_log_keeps_young_backups_beyond_the_count_and_marks_restarts(tmp_path: Path) -> None:
    log_file = tmp_path / "coder-agent.log"
    for k in range(1, 4):
        log_file.with_name(f"coder-agent.log.{k}").write_text('{"event": "from last month"}\n')
        _age(log_file.with_name(f"coder-agent.log.{k}"), 30 * DAY)
    try:
        configure_logging(fmt="json", level="warning", stream=io.StringIO(), log_file=log_file, max_bytes=400,
                          backups=1, retention=DAY)
        # the floor keeps one (old) backup; the other two are older than the window
        assert sorted(x.name for x in tmp_path.iterdir()) == ["coder-agent.log", "coder-agent.log.1"]
        for i in range(60):
            get_logger("test").warning("busy", i=i)
        files = sorted(tmp_path.iterdir(), key=lambda x: int(x.suffix[1:]) if x.suffix[1:].isdigit() else 0)
        assert len(files) > 10  # the old size-only rule (backups=1) would keep 2 files
        events = [json.loads(ln) for f in reversed(files) for ln in f.read_text().splitlines()]
        assert [e["i"] for e in events if e.get("event") == "busy"] == list(range(60))  # nothing young lost
        assert "from last month" not in [e["event"] for e in events]
        marker = next(e for e in events if "started" in e["event"])
        assert marker["event"] == f"coder-agent process {os.getpid()} started; log file opened"
    finally:
        configure_logging(stream=io.StringIO())  # detach the file handler


def test_retention_setting(tmp_path: Path) -> None:
    base = {"CODER_AGENT_URL": "http://127.0.0.1:1", "CODER_AGENT_TOKEN": "x" * 20}
    assert load_settings({}, env=base).log_retention == 7 * DAY
    assert load_settings({}, env={**base, "CODER_AGENT_LOG_RETENTION": "24h"}).log_retention == DAY
    assert load_settings({"log_retention": "90m"}, env=base).log_retention == 5400
    with pytest.raises(ConfigError) as e:
        load_settings({}, env={**base, "CODER_AGENT_LOG_RETENTION": "a week"})
    assert "CODER_AGENT_LOG_RETENTION" in str(e.value)
