"""Received vs printed: what reached the control plane, compared with what the scripts printed.

Pure (no I/O). The rules the fault suite holds the daemon to:

* **lost**: a printed line that never arrived.
* **duplicated**: a line that arrived more than once. A retry after a fault may repeat the one
  batch that was in flight (coderd did the work but the answer was lost), so duplicates are
  allowed only as *replays*: a run of lines, each already received, that is a contiguous
  ascending stretch of the printed sequence, no longer than one batch (the same batch may be
  replayed more than once). A replay ending at the newest line received before it is an
  immediate retry; one that lands later (:attr:`Report.late_replays`) is a request coderd
  processed after the client had given up on it, arriving after newer batches.
  :attr:`Report.replays` lists them all; a test bounds how many it allows (one per fault event
  that could cut an answer) and whether late ones are allowed.
* **out of order**: the first arrivals of lines are not in printed order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coder_agent.logs.batch import MAX_BATCH_LINES

__all__ = ["Report", "check", "numbered"]


def numbered(prefix: str, n: int) -> list[str]:
    """``prefix1 .. prefixN``, what the suite's scripts print."""
    return [f"{prefix}{i}" for i in range(1, n + 1)]


@dataclass
class Report:
    printed: int
    received: int
    lost: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # received but never printed
    replays: list[tuple[int, int]] = field(default_factory=list)  # (first, last) printed index, 1-based
    late_replays: list[tuple[int, int]] = field(default_factory=list)  # replays that landed after newer lines

    @property
    def duplicates(self) -> int:
        return sum(b - a + 1 for a, b in self.replays)

    def ok(self, *, max_replays: int, max_batch: int = MAX_BATCH_LINES, late_ok: bool = False) -> bool:
        return not self.problems(max_replays=max_replays, max_batch=max_batch, late_ok=late_ok)

    def problems(self, *, max_replays: int, max_batch: int = MAX_BATCH_LINES, late_ok: bool = False) -> list[str]:
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} lost (first {self.lost[:3]})")
        if self.out_of_order:
            out.append(f"{len(self.out_of_order)} out of order (first {self.out_of_order[:3]})")
        if self.unknown:
            out.append(f"{len(self.unknown)} never printed (first {self.unknown[:3]})")
        if self.late_replays and not late_ok:
            out.append(f"replays landing after newer lines: {self.late_replays}")
        if len(self.replays) > max_replays:
            out.append(f"{len(self.replays)} replays > {max_replays} allowed: {self.replays}")
        long = [r for r in self.replays if r[1] - r[0] + 1 > max_batch]
        if long:
            out.append(f"replays longer than one batch ({max_batch}): {long}")
        return out

    def summary(self) -> str:
        return (f"printed {self.printed}, received {self.received}, lost {len(self.lost)}, "
                f"duplicated {self.duplicates} in {len(self.replays)} replay(s)"
                f"{f' ({len(self.late_replays)} late)' if self.late_replays else ''}, "
                f"out of order {len(self.out_of_order)}")


def check(printed: list[str], received: list[str]) -> Report:
    """Compare; ``printed`` lines must be distinct (the suite numbers them)."""
    index = {line: i for i, line in enumerate(printed)}
    assert len(index) == len(printed), "printed lines must be distinct"
    rep = Report(printed=len(printed), received=len(received))
    seen: set[int] = set()
    newest = -1  # highest printed index received so far
    run: list[int] = []  # the current stretch of duplicates

    def end_run() -> None:
        # A run may hold the same batch several times (its answer lost more than once): each
        # backward jump starts another copy, and each copy is checked on its own.
        piece: list[int] = []
        for i in [*run, None]:
            if piece and (i is None or i != piece[-1] + 1):
                rep.replays.append((piece[0] + 1, piece[-1] + 1))
                if piece[-1] != newest:
                    rep.late_replays.append((piece[0] + 1, piece[-1] + 1))
                piece = []
            if i is not None:
                piece.append(i)
        run.clear()

    for line in received:
        i = index.get(line)
        if i is None:
            rep.unknown.append(line)
            continue
        if i in seen:
            run.append(i)
            continue
        end_run()
        if i < newest:
            rep.out_of_order.append(line)
        newest = max(newest, i)
        seen.add(i)
    end_run()
    rep.lost = [line for i, line in enumerate(printed) if i not in seen]
    return rep
