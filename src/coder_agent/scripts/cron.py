"""Script schedules read as Coder's Go agent reads them; the calendar arithmetic is croniter's.

Rules (Go: ``cron.NewParser(Second | Minute | Hour | Dom | Month | DowOptional)`` in
``agent/agentscripts``):

* Five fields are ``second minute hour day-of-month month``; six add ``day-of-week``. So
  ``*/5 * * * *`` fires every 5 *seconds*, not every 5 minutes, exactly as under the Go agent.
  TOML ``[[scripts]]`` are read the same way, so one template works with either agent.
* Descriptors: ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``,
  ``@hourly``, and ``@every <duration>`` (Go durations: ``1h30m``, ``45s``, ``500ms``).
* ``?`` means ``*`` in any field (robfig's rule); names (``jan``, ``mon``), ranges, steps and
  lists are croniter's, which follows Vixie cron: when both day fields are restricted a day
  matches if either does.
* Times are wall-clock times in the timezone of the datetime passed in (the session passes
  local time, as the Go agent does). :meth:`CronSpec.next_after` is the first matching time
  strictly after the given one.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

__all__ = ["CronError", "CronSpec", "parse_cron"]


class CronError(ValueError):
    """The cron expression is not valid; the message says which part."""


_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0", "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *", "@hourly": "0 0 * * * *",
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


@dataclass(frozen=True)
class CronSpec:
    """A parsed schedule: six fields in croniter's seconds-first form, or a fixed interval."""

    fields: str  # "sec min hour dom month dow"
    every: float | None = None  # @every: a fixed interval instead of a calendar

    def next_after(self, t: dt.datetime) -> dt.datetime:
        """The first matching time strictly after ``t`` (same tzinfo)."""
        if self.every is not None:
            return t + dt.timedelta(seconds=self.every)
        from croniter import croniter  # only schedules pay for the import

        nxt: dt.datetime = croniter(self.fields, t, second_at_beginning=True).get_next(dt.datetime)
        return nxt


def _parse_every(text: str) -> float:
    rest = text.strip()
    total = 0.0
    pos = 0
    for m in _DURATION.finditer(rest):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(rest) or total <= 0:
        raise CronError(f"@every: {text.strip()!r} is not a duration like 1h30m or 45s")
    return total


def parse_cron(expr: str) -> CronSpec:
    """Parse a schedule (see the module rules). Raises :class:`CronError`."""
    from croniter import croniter

    text = " ".join(expr.split())
    low = text.lower()
    if low.startswith("@every"):
        return CronSpec("", every=_parse_every(text[6:]))
    if low.startswith("@"):
        if low not in _DESCRIPTORS:
            raise CronError(f"unknown descriptor {text!r}")
        text = _DESCRIPTORS[low]
    parts = text.split(" ")
    if len(parts) == 5:
        parts.append("*")  # DowOptional: five fields end at the month
    if len(parts) != 6:
        raise CronError(f"expected 5 fields (second minute hour day-of-month month) or 6 (and day-of-week), "
                        f"got {len(parts)}")
    # robfig takes "?" for "*" anywhere; croniter only in the day fields.
    parts = [p if p != "?" or i in (3, 5) else "*" for i, p in enumerate(parts)]
    fields = " ".join(parts)
    try:
        croniter(fields, dt.datetime(2000, 1, 1), second_at_beginning=True)
    except (ValueError, KeyError) as e:  # croniter's errors are ValueErrors
        raise CronError(f"{expr.strip()!r}: {e}") from None
    return CronSpec(fields)
