"""Pure shipping policy: when a batch goes out, and how much of coderd's 1 MiB per agent we use.

Rules:

* :class:`Batcher`: a batch is *due* when its byte size reaches ``max_bytes`` (1 MiB, Go's
  ``maxBytesPerBatch``) or it holds ``max_lines``, when its oldest line has waited ``interval``
  (1 s, Go's ``flushInterval``), or when a flush was asked for. So a stream of lines costs about
  one request per source per second, as under the Go agent's LogSender (no line limit there;
  ``max_lines`` only bounds what one batch holds). A batch's size is the sum of ``len(output in bytes) + overhead`` (21,
  the Go RPC sender's per-log allowance), so a batch always fits the RPC transport's 1 MiB cap.
* :class:`CapAccountant` counts the output bytes coderd has *accepted* (coderd counts
  ``len(output)`` per agent and rejects a batch whole once the total would pass 1 048 576).
  The cap is split in three: the *head* (``limit - tail_reserve - reserve``), ONE notice line
  (``reserve``), and the *tail* (``tail_reserve``, 64 KiB). Batches are planned so the head
  stays within its part: when the next lines do not fit, the ones that do go out with the
  notice and the head is over (``stopped == "cap"``). From then on lines are not sent as they
  come; when a source *finishes* it gets :meth:`CapAccountant.tail_share` of what is left and
  sends its last lines (see :mod:`coder_agent.logs.tail`). Every plan keeps the total within
  the limit, so a 413 never happens in normal operation. If the server says 413 (or the RPC
  transport says the limit was exceeded) anyway, shipping stops for good (no tails either: the
  server's count is not ours) and the caller says so once.
* Why 64 KiB of tail: the end of a failed build's log (the last few hundred lines) is what
  people read first, and the first error usually sits early, in the head; 64 KiB keeps 93 % of
  the cap for the head, and the first source to finish still shows its last 32 KiB (~300 lines
  of 100 bytes).
* Shares: a source finishing while the daemon runs gets half of what is left, or less when
  other sources also wait for their tail (an equal part among them), so sources that finish
  later (cron runs, stop scripts) still get a tail; at daemon shutdown (``final``) what is left
  is shared equally by the sources still waiting. A share below ``MIN_TAIL_SHARE`` is not
  used: those lines stay in the local file only.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["FLUSH_INTERVAL", "LOG_OVERHEAD", "MAX_BATCH_BYTES", "MAX_BATCH_LINES", "MAX_LOGS_LENGTH", "MIN_TAIL_SHARE",
           "TAIL_RESERVE", "Batcher", "CapAccountant", "PackedBatch", "PackedLines", "Plan"]

MAX_LOGS_LENGTH = 1_048_576  # coderd's max_logs_length, output bytes per agent
FLUSH_INTERVAL = 1.0  # Go's logSender flushInterval
MAX_BATCH_BYTES = 1 << 20  # Go's maxBytesPerBatch (output + LOG_OVERHEAD per line)
MAX_BATCH_LINES = 50_000  # above what 1 MiB holds at 21 bytes of overhead a line: bytes decide
LOG_OVERHEAD = 21  # per-log allowance of the Go RPC sender's batch limit
NOTICE_RESERVE = 4096  # bytes kept back for the one notice line
TAIL_RESERVE = 64 * 1024  # bytes kept back for the last lines of overflowed sources (why: module rules)
MIN_TAIL_SHARE = 512  # a smaller share would hold the "not sent" line and hardly a line of output

T = TypeVar("T")


@dataclass
class Batcher(Generic[T]):
    max_lines: int = 100
    max_bytes: int = 256 * 1024
    interval: float = 0.25
    overhead: int = LOG_OVERHEAD
    entries: list[T] = field(default_factory=list)
    size: int = 0
    first_at: float | None = None

    def cost(self, output_bytes: int) -> int:
        return output_bytes + self.overhead

    def room_for(self, output_bytes: int) -> bool:
        """Whether one more line of ``output_bytes`` fits (an empty batch always takes one)."""
        if not self.entries:
            return True
        return len(self.entries) < self.max_lines and self.size + self.cost(output_bytes) <= self.max_bytes

    def add(self, entry: T, output_bytes: int, now: float) -> None:
        if self.first_at is None:
            self.first_at = now
        self.entries.append(entry)
        self.size += self.cost(output_bytes)

    @property
    def full(self) -> bool:
        return len(self.entries) >= self.max_lines or self.size >= self.max_bytes - self.overhead

    def due(self, now: float, flush: bool = False) -> bool:
        if not self.entries:
            return False
        if self.full or flush:
            return True
        assert self.first_at is not None
        return now - self.first_at >= self.interval

    def deadline(self) -> float | None:
        """Monotonic time at which the batch becomes due by age (None when empty)."""
        return None if self.first_at is None else self.first_at + self.interval

    def take(self) -> list[T]:
        out = self.entries
        self.entries = []
        self.size = 0
        self.first_at = None
        return out


class PackedBatch(Batcher[int]):
    """A :class:`Batcher` whose lines are kept packed: their bytes in one ``bytearray``, their
    output sizes and offsets in arrays; ``entries`` holds each line's end position in its file.

    A 1 MiB batch of 100-byte lines is ~10 000 lines: as a few Python objects per line it held
    ~4 MiB, and the process kept that RSS after the batch was gone; packed it holds the bytes
    plus 8 bytes a line. :meth:`lines` gives the lines back one at a time, for a transport that
    serializes as it goes.
    """

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        self.blob = bytearray()
        self.sizes = array("I")  # output bytes of each line (what coderd counts)
        self._ends = array("I")  # offset in ``blob`` after each line

    def add_line(self, raw: bytes, output_bytes: int, end: int, now: float) -> None:
        self.add(end, output_bytes, now)
        self.blob += raw
        self._ends.append(len(self.blob))
        self.sizes.append(output_bytes)

    def lines(self, n: int) -> PackedLines:
        """The first ``n`` lines (of the batch as it is now: lines added or a :meth:`take` later
        do not change what it gives)."""
        return PackedLines(self.blob, self._ends[:n])

    def take(self) -> list[int]:
        self.blob = bytearray()
        self.sizes = array("I")
        self._ends = array("I")
        return super().take()


@dataclass(frozen=True)
class PackedLines:
    """Lines of a :class:`PackedBatch`, iterable as many times as needed, each line's bytes made
    only as it is reached."""

    blob: bytearray  # only ever appended to, so the first ``ends[-1]`` bytes never change
    ends: array[int]

    def __iter__(self) -> Iterator[bytes]:
        start = 0
        for end in self.ends:
            yield bytes(self.blob[start:end])
            start = end

    def __len__(self) -> int:
        return len(self.ends)


@dataclass(frozen=True)
class Plan:
    """How many of the offered lines to send, and whether the cap notice goes with them."""

    send: int
    notice: bool


@dataclass
class CapAccountant:
    limit: int = MAX_LOGS_LENGTH
    reserve: int = NOTICE_RESERVE
    tail_reserve: int = TAIL_RESERVE
    accepted: int = 0
    stopped: str | None = None  # None, "cap" (head over, tails go on), "413", "limit_exceeded"

    @property
    def budget(self) -> int:
        """Output bytes the head may still send before the notice."""
        return max(0, self.limit - self.tail_reserve - self.reserve - self.accepted)

    @property
    def refused_by_server(self) -> bool:
        return self.stopped in ("413", "limit_exceeded")

    def plan(self, sizes: Sequence[int]) -> Plan:
        """Plan a head batch of lines with output sizes ``sizes`` (bytes)."""
        if self.stopped is not None:
            return Plan(0, False)
        left = self.budget
        for i, n in enumerate(sizes):
            if n > left:
                return Plan(i, True)
            left -= n
        return Plan(len(sizes), False)

    def plan_tail(self, sizes: Sequence[int]) -> int:
        """How many of a tail batch's lines fit what is left under the limit (all, when the
        tail was planned with :meth:`tail_share`)."""
        if self.stopped != "cap":
            return 0
        left = self.limit - self.accepted
        for i, n in enumerate(sizes):
            if n > left:
                return i
            left -= n
        return len(sizes)

    def notice_room(self) -> int:
        """Bytes the notice line may use (what is left below the limit after the planned lines)."""
        return max(0, self.limit - self.tail_reserve - self.accepted)

    def tail_share(self, waiting: int, final: bool) -> int:
        """Output bytes (notice line included) one finishing source may use for its tail.

        ``waiting``: sources waiting for a tail now, this one included. 0 when no tail may go.
        """
        if self.stopped != "cap":
            return 0
        left = max(0, self.limit - self.accepted)
        share = left // max(1, waiting) if final else left // max(2, waiting)
        return share if share >= MIN_TAIL_SHARE else 0

    def acknowledged(self, output_bytes: int, notice: bool) -> None:
        self.accepted += output_bytes
        if notice:
            self.stopped = "cap"

    def refused(self, reason: str) -> bool:
        """The server refused more (``"413"`` or ``"limit_exceeded"``). True the first time."""
        first = not self.refused_by_server
        if first:
            self.stopped = reason
        return first

    def dump(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "stopped": self.stopped}

    def load(self, data: Any) -> None:
        if isinstance(data, dict):
            acc = data.get("accepted")
            if isinstance(acc, int) and acc >= 0:
                self.accepted = acc
            st = data.get("stopped")
            if st in ("cap", "413", "limit_exceeded"):
                self.stopped = st
