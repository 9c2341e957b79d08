"""Pure shipping policy: when a batch goes out, and how much of coderd's 1 MiB per agent we use.

Rules:

* :class:`Batcher`: a batch is *due* when it holds ``max_lines`` (100, as the Go sender) or its
  byte size reaches ``max_bytes``, when its oldest line has waited ``interval`` (250 ms), or when
  a flush was asked for. A batch's size is the sum of ``len(output in bytes) + overhead`` (21,
  the Go RPC sender's per-log allowance), so a batch always fits the RPC transport's 1 MiB cap.
* :class:`CapAccountant` counts the output bytes coderd has *accepted* (coderd counts
  ``len(output)`` per agent and rejects a batch whole once the total would pass 1 048 576).
  It plans each batch so that the total stays below ``limit - reserve``: when the next lines do
  not fit, the ones that do are sent together with ONE notice line (which the reserve pays for)
  and shipping stops. So a 413 never happens in normal operation. If the server says 413 (or the
  RPC transport says the limit was exceeded) anyway, shipping stops and the caller says so once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["LOG_OVERHEAD", "MAX_LOGS_LENGTH", "Batcher", "CapAccountant", "Plan"]

MAX_LOGS_LENGTH = 1_048_576  # coderd's max_logs_length, output bytes per agent
LOG_OVERHEAD = 21  # per-log allowance of the Go RPC sender's batch limit
NOTICE_RESERVE = 4096  # bytes kept back for the one notice line

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


@dataclass(frozen=True)
class Plan:
    """How many of the offered lines to send, and whether the cap notice goes with them."""

    send: int
    notice: bool


@dataclass
class CapAccountant:
    limit: int = MAX_LOGS_LENGTH
    reserve: int = NOTICE_RESERVE
    accepted: int = 0
    stopped: str | None = None  # None, "cap" (we stopped before it), "413", "limit_exceeded"

    @property
    def budget(self) -> int:
        """Output bytes that may still be sent before the notice."""
        return max(0, self.limit - self.reserve - self.accepted)

    def plan(self, sizes: list[int]) -> Plan:
        """Plan a batch of lines with output sizes ``sizes`` (bytes)."""
        if self.stopped is not None:
            return Plan(0, False)
        left = self.budget
        for i, n in enumerate(sizes):
            if n > left:
                return Plan(i, True)
            left -= n
        return Plan(len(sizes), False)

    def notice_room(self) -> int:
        """Bytes the notice line may use (what is left below the limit after the planned lines)."""
        return max(0, self.limit - self.accepted)

    def acknowledged(self, output_bytes: int, notice: bool) -> None:
        self.accepted += output_bytes
        if notice:
            self.stopped = "cap"

    def refused(self, reason: str) -> bool:
        """The server refused more (``"413"`` or ``"limit_exceeded"``). True the first time."""
        first = self.stopped is None
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
