"""Local files: rotation keeps logical positions; the reader walks rotated files; follow's resume rule."""

from __future__ import annotations

from pathlib import Path

from coder_agent.logs.files import Reader, SourceFile
from coder_agent.logs.follow import resume_plan


def test_rotation_positions_and_reader_walk(tmp_path: Path) -> None:
    sf = SourceFile(tmp_path / "s.log", max_bytes=50, backups=3)
    r = Reader(sf, sf.total)
    lines = [f"line {i:03d}".encode() for i in range(40)]
    got: list[bytes] = []
    for i, ln in enumerate(lines):
        sf.write(ln + b"\n")
        if i % 7 == 0:
            while (x := r.next_line()) is not None:
                got.append(x[0])
    while (x := r.next_line()) is not None:
        got.append(x[0])
    assert got == lines
    assert r.pos == sf.total
    assert (tmp_path / "s.log.1").exists() and not (tmp_path / "s.log.4").exists()
    # an (inode, offset) saved on disk maps back to the same logical position
    ino, off = sf.disk_position(sf.total - 9)
    assert sf.locate(ino, off) == sf.total - 9
    sf.close()


def test_reopen_marks_the_restart_and_repairs_a_torn_line(tmp_path: Path) -> None:
    p = tmp_path / "s.log"
    p.write_bytes(b"2026-01-01T00:00:00.000000Z info whole\nhalf a li")
    sf = SourceFile(p, marker="restarted")
    sf.write(b"2026-01-01T00:00:01.000000Z info next\n")
    sf.close()
    assert p.read_bytes().split(b"\n")[1:4] == [b"half a li", b"# restarted", b"2026-01-01T00:00:01.000000Z info next"]


def test_resume_plan() -> None:
    assert resume_plan(None, (5, 100), None) == ("current", 0)  # first time: from the start
    assert resume_plan((5, 40), (5, 100), None) == ("current", 40)
    assert resume_plan((5, 400), (5, 100), None) == ("current", 0)  # truncated meanwhile
    assert resume_plan((5, 40), (6, 10), (5, 90)) == ("rotated-then-current", 40)
    assert resume_plan((5, 40), (6, 10), (7, 90)) == ("current", 0)  # rotated twice: start over
    assert resume_plan((5, 40), None, None) == ("wait", 0)
    assert resume_plan((5, 40), None, (5, 90)) == ("rotated-then-current", 40)
