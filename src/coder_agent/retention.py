"""How long rotated log files are kept: by age as well as by size (USER-PAIN 3).

Rules (one *set* = an active file ``<name>`` and its backups ``<name>.1`` (newest) … ``<name>.N``):

* Rotation renames ``<name>`` to ``<name>.1`` and shifts every existing backup up by one, so the
  numbers stay contiguous and ordered by age. Then the set is pruned, oldest first.
* :meth:`Retention.keep` is the pure rule. Backups are walked newest first; the first
  ``min_backups`` are always kept (a quiet workspace keeps its last history however old);
  beyond them a backup is kept while it is younger than ``max_age`` (its age is the time since
  its last line, i.e. its mtime) AND the set, counted newest first with the active file, stays
  within ``max_total`` bytes; ``max_backups`` bounds the count. The first backup that fails
  ends the walk: it and every older one are deleted. So the kept backups are always the newest.
* Why both: a size-only rule (the Go agent's, and ours before) drops a chatty day's files within
  hours, exactly when someone debugs it the next morning; a time-only rule lets a runaway script
  fill the disk. The defaults keep 7 days (longer than coderd keeps build logs, ~7 days,
  coder/coder#10576) within 256 MiB per set.
* :meth:`Retention.count` is the old size-only behaviour (exactly ``n`` backups).
* :func:`rotate_set` and :func:`prune_set` do the file operations; they never raise for a file
  that vanished meanwhile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_MAX_AGE", "DEFAULT_MAX_TOTAL", "Retention", "backup_path", "existing_backups", "prune_set",
           "rotate_set"]

DEFAULT_MAX_AGE = 7 * 86400.0
DEFAULT_MAX_TOTAL = 256 << 20


@dataclass(frozen=True)
class Retention:
    min_backups: int = 2
    max_backups: int = 1000
    max_age: float = DEFAULT_MAX_AGE
    max_total: int = DEFAULT_MAX_TOTAL

    @classmethod
    def count(cls, n: int) -> Retention:
        """Exactly ``n`` backups, whatever their age and size (size-only rotation)."""
        return cls(min_backups=n, max_backups=n, max_age=0.0, max_total=0)

    def keep(self, backups: list[tuple[int, float]], active_size: int, now: float) -> int:
        """How many of ``backups`` (``(size, mtime)``, newest first) to keep."""
        total = active_size
        for i, (size, mtime) in enumerate(backups):
            total += size
            if i < self.min_backups:
                continue
            if i >= self.max_backups or now - mtime > self.max_age or total > self.max_total:
                return i
        return len(backups)


def backup_path(path: Path, k: int) -> Path:
    return path.with_name(f"{path.name}.{k}")


def existing_backups(path: Path, limit: int = 100_000) -> int:
    """How many contiguous backups ``<name>.1`` … exist."""
    k = 0
    while k < limit and os.path.lexists(backup_path(path, k + 1)):
        k += 1
    return k


def rotate_set(path: Path, count: int) -> None:
    """Shift ``<name>.1..count`` up by one and rename ``<name>`` to ``<name>.1``."""
    for k in range(count, 0, -1):
        try:
            os.replace(backup_path(path, k), backup_path(path, k + 1))
        except FileNotFoundError:
            continue
    try:
        os.replace(path, backup_path(path, 1))
    except FileNotFoundError:
        pass


def prune_set(path: Path, retention: Retention, now: float, count: int | None = None) -> int:
    """Delete the backups :meth:`Retention.keep` does not keep. Returns how many remain."""
    if count is None:
        count = existing_backups(path)
    try:
        active = path.stat().st_size
    except FileNotFoundError:
        active = 0
    stats: list[tuple[int, float]] = []
    for k in range(1, count + 1):
        try:
            st = backup_path(path, k).stat()
        except FileNotFoundError:
            break
        stats.append((st.st_size, st.st_mtime))
    kept = retention.keep(stats, active, now)
    for k in range(count, kept, -1):
        try:
            backup_path(path, k).unlink()
        except FileNotFoundError:
            pass
    return kept
