"""The log dir's disk fills up mid-run (a small tmpfs mounted by the test, then filled): lines the
OS refuses stay in memory, bounded, and still reach Coder; status and health say so; once there
is room again the local file is completed."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coder_agent.devserver import DevServer
from coder_agent.logs.files import Reader, SourceFile

from ..conftest import apoll, mount_tmpfs
from .conftest import RESULTS, Lines


@pytest.fixture
def small_log_dir(short_tmp: Path) -> Iterator[Path]:
    with mount_tmpfs(short_tmp / "logs", "size=1m") as d:
        yield d


def fill(d: Path) -> Path:
    """Fill the filesystem of ``d`` until the OS says ENOSPC (only a small mount point: never the real disk)."""
    vfs = os.statvfs(d)
    assert os.path.ismount(d) and vfs.f_blocks * vfs.f_frsize <= 16 << 20, f"{d} is not a small tmpfs"
    filler = d / "filler"
    with open(filler, "wb", buffering=0) as f:
        chunk = b"\0" * 4096
        while True:
            try:
                f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
    with contextlib.suppress(OSError), open(filler, "ab", buffering=0) as f:  # the last few bytes too
        while f.write(b"\0"):
            pass
    return filler


async def test_disk_full_lines_still_reach_coder(devserver: DevServer, scenario,  # type: ignore[no-untyped-def]
                                                 small_log_dir: Path) -> None:
    lines = Lines(n=600, pause=0.005)
    run = scenario(devserver, lines)
    run.start()
    await run.ready()
    await apoll(lambda: len(run.received()) >= 50, timeout=20)
    filler = fill(small_log_dir)

    def source() -> dict[str, Any]:
        return next(s for s in run.status()["logs"]["sources"] if s["display_name"] == "Fault lines")

    src = await apoll(lambda: (s := source())["write_error"] and s, timeout=20)
    assert src["write_error"] == "No space left on device"
    await run.all_received(timeout=30)
    st = run.status()
    src = source()
    health = st["services"]["logs"]
    assert health["state"] == "degraded" and "bytes held in memory and shipped from there" in health["message"], health
    assert src["unwritten_bytes"] > 0 and src["dropped_lines"] == 0 and src["shipped_lines"] == lines.n
    held = src["unwritten_bytes"]
    run.alive()

    def own_log_refused() -> bool:
        """The daemon's own log file is on the full disk too, but its last page may still have room
        for a few records (tmpfs allocates whole pages): make it log until a write is refused."""
        if "coder-agent.log (" in run.daemon.stderr():
            return True
        run.daemon.signal(signal.SIGHUP)  # one info record ("retrying ... now"); harmless while connected
        return False

    await apoll(own_log_refused, timeout=30, interval=0.1)
    err = run.daemon.stderr()  # one notice, no tracebacks
    assert "Logging error" not in err and err.count("coder-agent.log (") == 1, err[-3000:]
    filler.unlink()  # room again: the tail goes to disk, the local file is complete
    await apoll(lambda: source()["write_error"] is None and source()["unwritten_bytes"] == 0, timeout=20)
    await apoll(lambda: run.status()["services"]["logs"]["state"] == "ok", timeout=20)
    assert run.local_lines() == lines.printed
    await run.finish(f"log dir's disk full mid-run (1 MiB tmpfs filled; {held} bytes held in memory)",
                     max_replays=0)
    assert "coder-agent.log works again" in run.daemon.stderr()  # said at the next record (the stop)


def test_unwritten_tail_is_bounded_and_served_in_order(short_tmp: Path) -> None:
    """The file core alone, on a full tmpfs: the tail takes whole lines up to its bound, the rest
    is dropped and counted, the reader serves the tail from memory, and freeing room completes
    the file in order."""
    with mount_tmpfs(short_tmp / "tiny", "size=64k") as d:
        sf = SourceFile(d / "s.log", max_unwritten=1000)
        sf.write(b"on-disk\n")
        filler = fill(d)
        kept, dropped = [], 0
        for i in range(300):  # the file's last page takes ~4 KiB first; the tail then fills up
            line = f"mem-{i:03d}-{'x' * 40}\n".encode()
            if sf.write(line):
                kept.append(line)
            else:
                dropped += 1
        assert sf.write_error == "No space left on device"
        on_disk = (d / "s.log").stat().st_size
        held = sf.unwritten
        assert 0 < held <= 1000 and on_disk + held == sf.total
        assert dropped > 0 and sf.dropped_lines == dropped and sf.dropped_bytes == dropped * len(kept[0])
        r = Reader(sf, 0)
        got = []
        while (x := r.next_line()) is not None:
            got.append(x[0] + b"\n")
        assert got == [b"on-disk\n", *kept]
        filler.unlink()
        sf.flush()
        assert sf.unwritten == 0 and sf.write_error is None
        sf.write(b"after\n")
        assert (d / "s.log").read_bytes() == b"".join([b"on-disk\n", *kept, b"after\n"])
        assert r.next_line() == (b"after", sf.total)  # the reader does not re-read the flushed tail
        sf.close()
        r.close()
        RESULTS.append(f"unwritten tail on a full disk: {held} bytes held (bound 1000), "
                       f"{dropped} lines dropped and counted, file completed in order once room came back -> held")


