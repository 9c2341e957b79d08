"""Pure rules for the *tail* of an overflowed log source: which last lines go to Coder after its
1 MiB cap was reached, and how much was left out. No I/O, no clock.

Rules:

* After the head stopped (see :mod:`coder_agent.logs.batch`), a source's unsent lines form a
  *region* of its local file: from its cursor to where it stood when it *finished* (a script's
  run ended, or the daemon is stopping). Of that region only a suffix is sent: the longest run
  of last lines whose cost fits the source's share of the tail budget
  (:meth:`~coder_agent.logs.batch.CapAccountant.tail_share`), after ONE line saying how many
  bytes and lines were left out and where the complete log is. A line's cost is its output
  bytes plus one, so even empty lines are bounded.
* The region is read once, oldest to newest, in blocks of whole lines. Blocks that end more than
  :func:`suffix_bytes` before the region's end cannot hold a tail line, so they are only counted
  in bulk (:func:`count_block`: C-speed ``bytes.count`` and one regex); only the last
  ``suffix_bytes`` are parsed line by line into a :class:`TailWindow`. A 1 GB region costs about
  a second, in blocks, and memory stays bounded by the budget.
* Counting relies on the local file format (:mod:`coder_agent.logs.text`): each entry line is
  ``<27-character time> <level> <output>\\n``; lines starting with ``#`` are markers and count
  neither as lines nor as bytes. So "N bytes" are output bytes, the way coderd counts them.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["TailCount", "TailPlanner", "TailWindow", "count_block", "suffix_bytes", "tail_notice_text"]

_TIME = 27  # len("2026-01-01T00:00:00.000000Z")
_OVERHEAD4 = _TIME + 1 + 4 + 1 + 1  # time, space, 4-letter level (info, warn), space, newline
_FIVE = re.compile(rb"\n[^#\n][^\n]{%d} (?:error|debug|trace) " % (_TIME - 1))
_FIVE_FIRST = re.compile(rb"[^#\n][^\n]{%d} (?:error|debug|trace) " % (_TIME - 1))
_MARKER = re.compile(rb"\n#[^\n]*")
_MAX_PREFIX = _OVERHEAD4 + 1  # file bytes per entry beyond its output


def suffix_bytes(budget: int, max_line: int) -> int:
    """File bytes at the end of a region that can hold lines of total cost ``budget``.

    Each entry line takes at most ``cost + _MAX_PREFIX`` file bytes and costs at least one, so
    any suffix longer than this holds more than ``budget`` of cost (plus one cut line).
    """
    return budget * (_MAX_PREFIX + 1) + max_line + _MAX_PREFIX


@dataclass
class TailCount:
    lines: int = 0
    bytes: int = 0

    def add(self, other: TailCount) -> None:
        self.lines += other.lines
        self.bytes += other.bytes


def count_block(block: bytes) -> TailCount:
    """Entries and output bytes in ``block`` (whole lines of the local file format)."""
    if not block:
        return TailCount()
    newlines = block.count(b"\n")
    marker_lines = marker_bytes = 0
    if block[:1] == b"#":  # the patterns anchor on the newline before a line; the first has none
        marker_lines, marker_bytes = 1, block.index(b"\n") + 1
    if b"#" in block:
        for m in _MARKER.finditer(block):
            marker_lines += 1
            marker_bytes += m.end() - m.start()  # "\n#..." = the marker line's own length with its newline
    entries = newlines - marker_lines
    five = len(_FIVE.findall(block)) + (1 if _FIVE_FIRST.match(block) else 0)
    out = len(block) - marker_bytes - entries * _OVERHEAD4 - five
    return TailCount(entries, max(0, out))


@dataclass
class TailWindow:
    """The last lines whose total cost stays within ``budget``; evicted ones are counted."""

    budget: int
    lines: deque[tuple[int, int]] = field(default_factory=deque)  # (start position, output bytes)
    cost: int = 0
    dropped: TailCount = field(default_factory=TailCount)

    def add(self, start: int, output_bytes: int) -> None:
        self.lines.append((start, output_bytes))
        self.cost += output_bytes + 1
        while self.lines and self.cost > self.budget:
            _, n = self.lines.popleft()
            self.cost -= n + 1
            self.dropped.lines += 1
            self.dropped.bytes += n

    def start(self, end: int) -> int:
        """Position of the first line kept (``end`` when none is)."""
        return self.lines[0][0] if self.lines else end


def tail_notice_text(skipped: TailCount, path: str) -> str:
    """The one line that precedes a tail (the wording users and tests rely on)."""
    return (f"… {skipped.bytes} bytes ({skipped.lines} lines) not sent to Coder; "
            f"the complete log is in {path} …")


class TailPlanner:
    """Feed a region's blocks in order (:meth:`feed`); then :attr:`start` is where the tail
    begins, :attr:`skipped` what is left out before it, :attr:`kept` how many lines it has.

    ``parse`` maps one line (without its newline) to its output bytes, or None for a marker."""

    def __init__(self, end: int, budget: int, max_line: int, parse: Callable[[bytes], int | None]) -> None:
        self.end = end
        self.window = TailWindow(budget)
        self.counted = TailCount()
        self.bulk_until = end - suffix_bytes(budget, max_line)
        self.parse = parse

    def feed(self, pos: int, block: bytes) -> None:
        if pos + len(block) <= self.bulk_until:
            self.counted.add(count_block(block))
            return
        i = 0
        while (j := block.find(b"\n", i)) >= 0:  # no split(): a block's worth of small objects at once
            n = self.parse(block[i:j])
            if n is not None:
                self.window.add(pos + i, n)
            i = j + 1

    @property
    def start(self) -> int:
        return self.window.start(self.end)

    @property
    def skipped(self) -> TailCount:
        out = TailCount(self.counted.lines, self.counted.bytes)
        out.add(self.window.dropped)
        return out

    @property
    def kept(self) -> int:
        return len(self.window.lines)
