"""A small, pure cron matcher.

Rules:

* Five fields ``minute hour day-of-month month day-of-week`` (standard cron), or six with a
  leading ``second`` field (what Coder's Go agent parses, robfig/cron with seconds), or a
  descriptor: ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``,
  ``@hourly``, ``@every <duration>`` (Go style: ``1h30m``, ``45s``).
* Each field: ``*`` or ``?``, a number, ``a-b``, ``*/n``, ``a-b/n``, ``a/n``, comma lists; month
  and weekday names (``jan``, ``mon``); weekday 7 is Sunday.
* Day rule as in Vixie cron and robfig: when both day-of-month and day-of-week are restricted,
  a day matches if either does; otherwise both must.
* Times are wall-clock times in whatever timezone the caller passes (the runner passes local
  time, as the Go agent does). :meth:`CronSpec.next_after` returns the first matching time
  strictly after the given one, at whole seconds.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

__all__ = ["CronError", "CronSpec", "parse_cron"]


class CronError(ValueError):
    """The cron expression is not valid; the message says which part."""


_MONTHS = {n: i + 1 for i, n in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
_DAYS = {n: i for i, n in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0", "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *", "@hourly": "0 0 * * * *",
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")


def _field(text: str, lo: int, hi: int, names: dict[str, int] | None, what: str) -> tuple[frozenset[int], bool]:
    """The values a field allows, and whether it was unrestricted (``*`` or ``?``)."""
    values: set[int] = set()
    star = text in ("*", "?")

    def num(s: str) -> int:
        s = s.lower()
        if names and s in names:
            return names[s]
        if not s.isdigit():
            raise CronError(f"{what}: {s!r} is not a number")
        return int(s)

    for part in text.split(","):
        rng, _, step_s = part.partition("/")
        step = 1
        if step_s:
            if not step_s.isdigit() or int(step_s) == 0:
                raise CronError(f"{what}: bad step {step_s!r}")
            step = int(step_s)
        if rng in ("*", "?"):
            a, b = lo, hi
        elif "-" in rng:
            a_s, _, b_s = rng.partition("-")
            a, b = num(a_s), num(b_s)
        else:
            a = num(rng)
            b = hi if step_s else a
        if not (lo <= a <= hi and lo <= b <= hi) or a > b:
            raise CronError(f"{what}: {part!r} is out of range {lo}-{hi}")
        values.update(range(a, b + 1, step))
    if what == "day-of-week" and 7 in values:  # 7 is Sunday too
        values.discard(7)
        values.add(0)
    return frozenset(values), star


@dataclass(frozen=True)
class CronSpec:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_star: bool
    weekdays_star: bool
    every: float | None = None  # @every: a fixed interval instead of a calendar

    def day_matches(self, t: dt.datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self.days_star or self.weekdays_star:
            return dom and dow
        return dom or dow

    def matches(self, t: dt.datetime) -> bool:
        return (t.second in self.seconds and t.minute in self.minutes and t.hour in self.hours
                and t.month in self.months and self.day_matches(t))

    def next_after(self, t: dt.datetime) -> dt.datetime:
        """The first matching time strictly after ``t`` (whole seconds, same tzinfo)."""
        if self.every is not None:
            return t + dt.timedelta(seconds=self.every)
        t = t.replace(microsecond=0) + dt.timedelta(seconds=1)
        limit = t.year + 5
        while t.year <= limit:
            if t.month not in self.months:
                y, m = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
                t = t.replace(year=y, month=m, day=1, hour=0, minute=0, second=0)
                continue
            if not self.day_matches(t):
                t = (t + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0)
                continue
            if t.hour not in self.hours:
                t = (t + dt.timedelta(hours=1)).replace(minute=0, second=0)
                continue
            if t.minute not in self.minutes:
                t = (t + dt.timedelta(minutes=1)).replace(second=0)
                continue
            if t.second not in self.seconds:
                t = t + dt.timedelta(seconds=1)
                continue
            return t
        raise CronError("the schedule never matches")


def _parse_every(text: str) -> float:
    rest = text.strip()
    total = 0.0
    pos = 0
    for m in _DURATION.finditer(rest):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[m.group(2)]
        pos = m.end()
    if pos != len(rest) or total <= 0:
        raise CronError(f"@every: {text!r} is not a duration like 1h30m or 45s")
    return total


def parse_cron(expr: str) -> CronSpec:
    """Parse a cron expression (see the module rules). Raises :class:`CronError`."""
    text = " ".join(expr.split())
    low = text.lower()
    if low.startswith("@every"):
        every = _parse_every(text[6:])
        full = frozenset(range(60))
        return CronSpec(full, full, frozenset(range(24)), frozenset(range(1, 32)), frozenset(range(1, 13)),
                        frozenset(range(7)), True, True, every=every)
    if low.startswith("@"):
        if low not in _DESCRIPTORS:
            raise CronError(f"unknown descriptor {text!r}")
        text = _DESCRIPTORS[low]
    parts = text.split(" ")
    if len(parts) == 5:
        parts = ["0", *parts]
    if len(parts) != 6:
        raise CronError(f"expected 5 fields (minute hour day month weekday) or 6 with seconds, got {len(parts)}")
    sec, _ = _field(parts[0], 0, 59, None, "second")
    minute, _ = _field(parts[1], 0, 59, None, "minute")
    hour, _ = _field(parts[2], 0, 23, None, "hour")
    dom, dom_star = _field(parts[3], 1, 31, None, "day-of-month")
    month, _ = _field(parts[4], 1, 12, _MONTHS, "month")
    dow, dow_star = _field(parts[5], 0, 7, _DAYS, "day-of-week")
    return CronSpec(sec, minute, hour, dom, month, dow, dom_star, dow_star)
