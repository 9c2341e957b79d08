"""Followed files (``[[log_sources]]``) rewritten in place, truncated, copy-truncated (by hand and
by the real ``logrotate``), with a restart in between; woken by inotify, polling only without it.

The deterministic cases drive :meth:`FileFollower.poll` directly (one call = one wake-up), so
"within one poll interval" is exact; the others run the follower's loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from coder_agent.config import LogSourceConfig
from coder_agent.devserver import DevServer
from coder_agent.inotify import Inotify
from coder_agent.logs import follow
from coder_agent.logs.follow import FileFollower, resume_point
from coder_agent.logsink import MemoryLogSink, source_id_for
from coder_agent.state import StateStore

from ..conftest import apoll, t, unavailable


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "app.log"
        self.store = StateStore(tmp / "state")
        self.sink = MemoryLogSink()
        self.cfg = LogSourceConfig(display_name="app", path=str(self.path))

    def follower(self, **kw: object) -> FileFollower:
        return FileFollower(self.cfg, self.sink, self.store, **kw)  # type: ignore[arg-type]

    def started(self) -> FileFollower:
        f = self.follower()
        f.start()
        return f

    @property
    def shipped(self) -> list[str]:
        return [ln.output for ln in self.sink.lines]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield Rig(tmp_path)


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def copytruncate(path: Path) -> None:
    """What logrotate's copytruncate does: copy to <path>.1, then truncate the original in place."""
    shutil.copyfile(path, path.with_name(path.name + ".1"))
    with path.open("r+b") as f:
        f.truncate(0)


def test_same_size_rewrite_is_read_again(rig: Rig) -> None:
    rig.path.write_text("accrot-1\n")
    f = rig.started()
    f.poll()
    ino = rig.path.stat().st_ino
    rig.path.write_text("accrot-2\n")  # O_TRUNC then the same number of bytes: same inode, same size
    assert rig.path.stat().st_ino == ino and rig.path.stat().st_size == 9
    f.poll()
    append(rig.path, "accrot-3\n")
    f.poll()
    assert rig.shipped == ["accrot-1", "accrot-2", "accrot-3"]
    f.close()


def test_truncation_then_a_burst_beyond_the_old_offset_in_one_wakeup(rig: Rig) -> None:
    rig.path.write_text("".join(f"old {i}\n" for i in range(10)))
    f = rig.started()
    f.poll()
    old_offset = rig.path.stat().st_size
    rig.path.write_text("".join(f"new {i}\n" for i in range(100)))  # truncate + burst, no wake-up between
    assert rig.path.stat().st_size > 2 * old_offset
    f.poll()
    assert rig.shipped == [f"old {i}" for i in range(10)] + [f"new {i}" for i in range(100)]
    f.close()


def test_a_partial_line_and_a_rewrite_keeping_the_head(rig: Rig) -> None:
    """Only the bytes before our offset changed (a tool rewrote the end of its log): still seen."""
    rig.path.write_text("header\nline a\nhalf")
    f = rig.started()
    f.poll()
    assert rig.shipped == ["header", "line a"]
    rig.path.write_text("header\nline b\nhalf-done\n")
    f.poll()
    # the partial line we held is said as it was, then the rewritten file from its start
    # (duplicate: "header", kept by the rewrite, as the follow.py docstring says)
    assert rig.shipped == ["header", "line a", "half", "header", "line b", "half-done"]
    f.close()


def test_copytruncate_reads_what_only_the_copy_has(rig: Rig) -> None:
    rig.path.write_text("".join(f"a {i}\n" for i in range(5)))
    f = rig.started()
    f.poll()
    append(rig.path, "".join(f"b {i}\n" for i in range(3)))  # written, not read yet, then copied away
    copytruncate(rig.path)
    append(rig.path, "c 0\n")
    f.poll()
    assert rig.shipped == [f"a {i}" for i in range(5)] + [f"b {i}" for i in range(3)] + ["c 0"]
    f.close()


def test_restart_after_a_same_size_rewrite_and_after_copytruncate(rig: Rig) -> None:
    rig.path.write_text("accrot-1\n")
    f = rig.started()
    f.poll()
    f.close()
    rig.path.write_text("accrot-2\n")  # while the daemon is down
    f = rig.started()
    f.poll()
    assert rig.shipped == ["accrot-1", "accrot-2"]
    append(rig.path, "x 0\n")
    f.poll()
    f.close()
    append(rig.path, "x 1\nx 2\n")  # down: written, then copied away and truncated, then more
    copytruncate(rig.path)
    append(rig.path, "y 0\n")
    f = rig.started()
    f.poll()
    append(rig.path, "y 1\n")
    f.poll()
    f.close()
    f = rig.started()  # and a plain restart: nothing again
    f.poll()
    assert rig.shipped == ["accrot-1", "accrot-2", "x 0", "x 1", "x 2", "y 0", "y 1"]
    f.close()


def test_resume_point_looks_down_the_rotated_chain() -> None:
    cur = (9, 50)
    assert resume_point(None, cur, []) == (0, 0) and resume_point(None, None, []) == (-1, 0)
    assert resume_point((5, 40), (5, 100), []) == (0, 40)
    assert resume_point((5, 40), (5, 100), [], current_same=False) == (0, 0)  # rewritten: start over
    # renamed twice: ours is <path>.2
    assert resume_point((5, 40), cur, [(6, 70), (5, 90)]) == (2, 40)
    # copied twice (copytruncate): the same inode as the path, ours by content in <path>.2
    assert resume_point((9, 40), cur, [(6, 70), (7, 90)], current_same=False,
                        rotated_same=[False, True]) == (2, 40)
    assert resume_point((9, 40), cur, [None, (7, 90)], current_same=False, rotated_same=[False, True]) == (2, 40)
    assert resume_point((9, 40), cur, [(6, 70), (7, 90)], current_same=False) == (0, 0)  # out of reach
    assert resume_point((5, 40), None, [(5, 90)]) == (1, 40)  # the path is gone: ours, then wait
    # we had read past the copy (.2) and stopped before seeing the truncate: .2 is ours, .1 is newer
    assert resume_point((9, 40), cur, [(6, 70), (7, 30)], current_same=False, rotated_same=[False, False],
                        rotated_prefix=[False, True]) == (2, 30)
    assert resume_point((9, 40), cur, [(6, 70), (7, 90)], current_same=False, rotated_same=[False, True],
                        rotated_prefix=[True, False]) == (2, 40)  # a full match beats a prefix


def test_two_copytruncates_while_down(rig: Rig) -> None:
    """One rotation we had not seen when we stopped, one while we were down: both copies are read."""
    rig.path.write_text("a 0\n")
    f = rig.started()
    f.poll()
    f.close()
    for batch in ("b", "c"):
        append(rig.path, f"{batch} 0\n{batch} 1\n")
        for k in (2, 1):  # logrotate shifts the older copies first
            older = rig.path.with_name(f"app.log.{k}")
            if older.exists():
                older.rename(rig.path.with_name(f"app.log.{k + 1}"))
        copytruncate(rig.path)
    append(rig.path, "d 0\n")
    f = rig.started()
    f.poll()
    assert rig.shipped == ["a 0", "b 0", "b 1", "c 0", "c 1", "d 0"]
    f.close()


def test_stopped_after_reading_past_the_copy_before_seeing_the_truncate(rig: Rig) -> None:
    pad = " " + "." * 70  # the copy is recognised by its head: longer than the 64-byte fingerprint
    rig.path.write_text(f"a 0{pad}\n")
    f = rig.started()
    shutil.copyfile(rig.path, rig.path.with_name("app.log.1"))  # logrotate's copy...
    append(rig.path, f"a 1{pad}\n")  # ...a line written before its truncate, which we read...
    f.poll()
    with rig.path.open("r+b") as fh:
        fh.truncate(0)  # ...the truncate, and we stop before noticing it
    f.close()
    append(rig.path, f"b 0{pad}\n")
    rig.path.with_name("app.log.1").rename(rig.path.with_name("app.log.2"))  # rotated once more, down
    copytruncate(rig.path)
    append(rig.path, f"c 0{pad}\n")
    f = rig.started()
    f.poll()
    assert rig.shipped == [f"{x}{pad}" for x in ("a 0", "a 1", "b 0", "c 0")]
    f.close()


def test_state_without_fingerprints_resumes_by_offset(rig: Rig) -> None:
    """A state dir written before fingerprints existed still resumes where it was."""
    rig.path.write_text("one\ntwo\n")
    f = rig.started()
    st = rig.path.stat()
    rig.store.put(f"logs-follow-{rig.sink.source('app').id}", {"ino": st.st_ino, "off": 4})
    f.close()
    f = rig.started()
    f.poll()
    assert rig.shipped == ["two"]
    f.close()


async def _running(f: FileFollower) -> asyncio.Task[None]:
    task = asyncio.create_task(f.run())
    await apoll(lambda: f.wakeups > 0)
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_inotify_wakes_on_change_and_an_idle_file_costs_nothing(rig: Rig) -> None:
    rig.path.write_text("first\n")
    f = rig.follower(interval=3600.0)  # a poll would never come in time: only inotify can wake it
    task = await _running(f)
    try:
        await apoll(lambda: rig.shipped == ["first"])
        assert f.status()["watch"] == "inotify"
        idle = f.wakeups
        await asyncio.sleep(t(1.0))
        assert f.wakeups == idle  # idle: not one wake-up
        append(rig.path, "second\n")
        await apoll(lambda: rig.shipped[-1:] == ["second"], timeout=10)
        rig.path.write_text("accrot\n")  # same-size rewrite, woken by IN_MODIFY
        await apoll(lambda: rig.shipped[-1:] == ["accrot"], timeout=10)
        rig.path.rename(rig.path.with_name("app.log.1"))  # rotation: IN_MOVE_SELF, then IN_CREATE
        rig.path.write_text("rotated\n")
        await apoll(lambda: rig.shipped[-1:] == ["rotated"], timeout=10)
        rig.path.unlink()  # deleted, then created again (IN_DELETE_SELF, IN_CREATE)
        await asyncio.sleep(t(0.2))
        tmp = rig.path.with_name("staged")
        tmp.write_text("moved in\n")
        tmp.rename(rig.path)  # IN_MOVED_TO
        await apoll(lambda: rig.shipped[-1:] == ["moved in"], timeout=10)
        assert rig.shipped == ["first", "second", "accrot", "rotated", "moved in"]
    finally:
        await _stop(task)


async def test_a_file_that_appears_later_is_seen_through_the_directory(rig: Rig) -> None:
    f = rig.follower(interval=3600.0)
    task = await _running(f)
    try:
        assert f.health.state == "degraded" and "waiting for" in f.health.message
        rig.path.write_text("late\n")
        await apoll(lambda: rig.shipped == ["late"], timeout=10)
    finally:
        await _stop(task)


async def test_without_inotify_it_polls_and_says_so_once(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow, "_said_polling", False)

    def no_inotify() -> Inotify:
        raise OSError(38, "inotify_init1: Function not implemented")

    other = rig.path.with_name("other.log")
    rig.path.write_text("a\n")
    other.write_text("b\n")
    with capture_logs() as logs:
        f = rig.follower(interval=0.05, inotify=no_inotify)
        g = FileFollower(LogSourceConfig(display_name="other", path=str(other)), rig.sink, rig.store,
                         interval=0.05, inotify=no_inotify)
        tasks = [await _running(f), await _running(g)]
        try:
            await apoll(lambda: sorted(rig.shipped) == ["a", "b"])
            assert f.status()["watch"] == "poll"
            rig.path.write_text("c\n")  # a same-size rewrite, seen by the poll
            await apoll(lambda: rig.shipped[-1:] == ["c"])
            n = f.wakeups
            await apoll(lambda: f.wakeups >= n + 3)  # it does poll
        finally:
            for task in tasks:
                await _stop(task)
    said = [e for e in logs if e["event"] == "inotify is unavailable; polling followed log files"]
    assert len(said) == 1 and "Function not implemented" in said[0]["error"]


WRITER = """
import os, sys, time
path, stop = sys.argv[1], sys.argv[2]
i = 0
with open(path, "a", buffering=1) as f:   # O_APPEND, like any logger that survives copytruncate
    while not os.path.exists(stop):
        f.write(f"line {i:07d}\\n")
        i += 1
        time.sleep(0.0005)
print(i)
"""


async def test_real_logrotate_copytruncate_on_a_busy_file_with_a_restart(rig: Rig, tmp_path: Path) -> None:
    logrotate = shutil.which("logrotate") or next(
        (p for p in ("/usr/sbin/logrotate", "/sbin/logrotate") if os.path.exists(p)), None)
    if logrotate is None:
        unavailable("logrotate is not installed (scripts/provision.sh: apt-get install logrotate)")
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"{rig.path} {{\n  copytruncate\n  rotate 50\n  missingok\n  nocompress\n}}\n")
    state = tmp_path / "logrotate.state"
    stop = tmp_path / "stop"
    rig.path.write_text("")

    async def rotate() -> None:
        r = await asyncio.to_thread(subprocess.run, [logrotate, "-f", "-s", str(state), str(conf)],
                                    capture_output=True, text=True, timeout=t(30))
        assert r.returncode == 0, r.stderr

    def written() -> int:
        return rig.path.stat().st_size // len("line 0000000\n")

    writer = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, str(rig.path), str(stop),
                                                  stdout=asyncio.subprocess.PIPE)
    task = await _running(rig.follower())
    try:
        for _ in range(2):  # rotations while following
            n = len(rig.shipped)
            await apoll(lambda n=n: len(rig.shipped) >= n + 300, timeout=30)  # type: ignore[misc]
            await rotate()
        copied = rig.path.with_name("app.log.1").read_text().splitlines()[-1]
        await apoll(lambda: rig.shipped[-1] > copied, timeout=30)  # it has read past the truncate
        await _stop(task)  # the daemon stops...
        unread = written() + 300
        await apoll(lambda: written() >= unread, timeout=30)  # lines it has not read...
        await rotate()  # ...are copied away and truncated while it is down...
        await apoll(lambda: written() >= 300, timeout=30)
        task = await _running(rig.follower())  # ...and it starts again
        n = len(rig.shipped)
        await apoll(lambda: len(rig.shipped) >= n + 600, timeout=30)
        await rotate()
        n = len(rig.shipped)
        await apoll(lambda: len(rig.shipped) >= n + 300, timeout=30)
    finally:
        stop.write_text("")
        out, _ = await asyncio.wait_for(writer.communicate(), t(30))
    total = int(out.decode().strip())
    last = f"line {total - 1:07d}"
    try:
        await apoll(lambda: rig.shipped[-1:] == [last], timeout=30)
    finally:
        await _stop(task)
    shipped = rig.shipped
    on_disk = set()
    for p in tmp_path.glob("app.log*"):
        on_disk.update(p.read_text().splitlines())
    everything = {f"line {i:07d}" for i in range(total)}
    assert len(on_disk) > 1000 and len(list(tmp_path.glob("app.log.*"))) == 4
    if not on_disk <= set(shipped):  # say where: which file held them, what the follower saw
        import json
        where = {p.name: (lambda ls: (ls[:1], ls[-1:], len(ls)))(p.read_text().splitlines())
                 for p in sorted(tmp_path.glob("app.log*"))}
        missing = sorted(on_disk - set(shipped))
        raise AssertionError(json.dumps({"missing": [missing[0], missing[-1], len(missing)], "files": where,
                                         "shipped_tail": shipped[-3:]}, indent=1))
    lost = everything - set(shipped)
    # the only lines allowed missing: those logrotate itself destroyed (written after its copy,
    # before its truncate) that we had not read yet: they are in no file
    assert not lost & on_disk
    assert len(shipped) == len(set(shipped)), "duplicates"  # copytruncate keeps no line: none
    assert shipped == sorted(shipped)  # in order


async def test_daemon_ships_a_same_size_rewrite_and_one_made_while_it_was_down(
        devserver: DevServer, daemon_env: Any, spawn_daemon: Any, short_tmp: Path) -> None:
    """The issue's scenario end to end: ``coder-agent run`` with a ``[[log_sources]]`` file, coderd
    (the devserver) receiving the lines."""
    followed = short_tmp / "acc.log"
    followed.write_text("accrot-1\n")
    cfg = short_tmp / "config.toml"
    cfg.write_text(f'[[log_sources]]\ndisplay_name = "acc"\npath = "{followed}"\n')
    env = daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_CONFIG=str(cfg))
    sid = source_id_for("acc")

    def got() -> list[str]:
        return [row["output"] for row in devserver.agent.logs if row["log_source_id"] == sid]

    d = spawn_daemon(env)
    await asyncio.to_thread(d.wait_ready)
    await apoll(lambda: got() == ["accrot-1"], timeout=30)
    followed.write_text("accrot-2\n")
    await apoll(lambda: got() == ["accrot-1", "accrot-2"], timeout=30)
    d.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.wait) == 0
    followed.write_text("accrot-3\n")  # rewritten while the daemon is down
    d2 = spawn_daemon(env)
    await asyncio.to_thread(d2.wait_ready)
    await apoll(lambda: got()[-1:] == ["accrot-3"], timeout=30)
    assert got() == ["accrot-1", "accrot-2", "accrot-3"]
    st = d2.api("GET", "/api/v0/status").json()
    assert st["logs"]["followed_files"]["acc"]["watch"] == "inotify"
