"""inotify: the pure event decoder, the relevance filter, and the real kernel interface."""

from __future__ import annotations

import struct
from pathlib import Path

from coder_agent import inotify as ino
from coder_agent.logs.follow import relevant


def record(wd: int, mask: int, name: bytes = b"", cookie: int = 0) -> bytes:
    """A ``struct inotify_event`` as the kernel writes it: the name NUL-padded to 16 bytes."""
    body = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", wd, mask, cookie, len(body)) + body


def test_decode_events_names_and_a_partial_record() -> None:
    data = record(1, ino.IN_MODIFY) + record(2, ino.IN_CREATE, b"app.log", cookie=7) + record(-1, ino.IN_Q_OVERFLOW)
    events, rest = ino.decode(data)
    assert events == [ino.Event(1, ino.IN_MODIFY, 0, ""), ino.Event(2, ino.IN_CREATE, 7, "app.log"),
                      ino.Event(-1, ino.IN_Q_OVERFLOW, 0, "")]
    assert rest == b""
    # a record cut anywhere (header or name) waits for the rest
    two = record(3, ino.IN_MOVED_TO, b"x.log")
    for cut in (1, 15, 16, 17, len(two) - 1):
        events, rest = ino.decode(data + two[:cut])
        assert len(events) == 3 and rest == two[:cut]
        events, rest = ino.decode(rest + two[cut:])
        assert events == [ino.Event(3, ino.IN_MOVED_TO, 0, "x.log")] and rest == b""
    assert ino.decode(b"") == ([], b"")


def test_relevant_filters_other_names_in_the_directory() -> None:
    E = ino.Event
    assert not relevant([E(1, ino.IN_CREATE, 0, "other.log")], 1, "app.log")
    assert relevant([E(1, ino.IN_CREATE, 0, "other.log"), E(1, ino.IN_MOVED_TO, 0, "app.log")], 1, "app.log")
    assert relevant([E(2, ino.IN_MODIFY, 0, "")], 1, "app.log")  # the file's own watch
    assert relevant([E(-1, ino.IN_Q_OVERFLOW, 0, "")], 1, "app.log")  # events were lost: look
    assert not relevant([], 1, "app.log")


def test_kernel_events_for_a_file_and_its_directory(tmp_path: Path) -> None:
    n = ino.Inotify()
    try:
        assert n.read() == []  # non-blocking: nothing queued
        dwd = n.add_watch(tmp_path, ino.IN_CREATE | ino.IN_MOVED_TO | ino.IN_ONLYDIR)
        f = tmp_path / "app.log"
        f.write_bytes(b"one\n")
        mask = ino.IN_MODIFY | ino.IN_MOVE_SELF | ino.IN_DELETE_SELF | ino.IN_ATTRIB
        fwd = n.add_watch(f, mask)
        assert n.add_watch(f, mask) == fwd  # the same inode, the same watch
        with f.open("ab") as fh:
            fh.write(b"two\n")
        f.rename(tmp_path / "app.log.1")
        got = n.read()
        assert ino.Event(dwd, ino.IN_CREATE, 0, "app.log") in got
        assert any(e.wd == fwd and e.mask & ino.IN_MODIFY for e in got)
        assert any(e.wd == fwd and e.mask & ino.IN_MOVE_SELF for e in got)
        (tmp_path / "app.log.1").unlink()
        got = n.read()
        assert any(e.wd == fwd and e.mask & ino.IN_DELETE_SELF for e in got)
        assert any(e.wd == fwd and e.mask & ino.IN_IGNORED for e in got)  # the watch went with the inode
        n.rm_watch(fwd)  # already gone: not an error
    finally:
        n.close()
    try:
        n.add_watch(tmp_path, ino.IN_CREATE)
    except OSError:
        pass
    else:
        raise AssertionError("a closed descriptor accepted a watch")
