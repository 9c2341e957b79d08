"""Pure text rules of the log pipeline: sanitising, splitting bytes into lines, the local file's
line format. No I/O, no clock.

Rules:

* :func:`sanitize` makes text coderd accepts: every run of invalid UTF-8 bytes becomes one "❌"
  (Go's ``strings.ToValidUTF8``), every NUL becomes "❌" (PostgreSQL rejects NUL in text), as
  ``codersdk/agentsdk/logs_sanitize.go`` does. Lone surrogates in ``str`` input count as invalid.
* :class:`LineSplitter` turns a byte stream into lines the way the Go agent's LogsWriter does:
  split on ``\\n``; one trailing ``\\r`` is stripped (so ``\\r\\n`` ends a line); a ``\\r`` inside a
  line (progress bars) is kept; the partial last line is emitted by :meth:`LineSplitter.close`.
  A line longer than ``max_line`` bytes is cut into pieces of at most ``max_line`` bytes, never
  inside a UTF-8 sequence. The result does not depend on how the stream was chunked.
* The local file holds one line per log entry: ``<RFC 3339 UTC time> <level> <output>\\n``.
  Lines starting with ``#`` are markers for people (restarts, notices) and are not log entries.
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = [
    "DEFAULT_MAX_LINE",
    "LEVELS",
    "REPLACEMENT",
    "LineSplitter",
    "format_entry",
    "format_time",
    "parse_entry",
    "sanitize",
    "sanitize_bytes",
    "split_text",
]

REPLACEMENT = "❌"
LEVELS = ("trace", "debug", "info", "warn", "error")
DEFAULT_MAX_LINE = 32 * 1024

_ESCAPED_RUN = re.compile("[\udc80-\udcff]+")  # surrogateescape'd invalid bytes
_SURROGATES = re.compile("[\ud800-\udfff]+")


def sanitize_bytes(raw: bytes) -> str:
    """Decode ``raw`` as UTF-8, replacing each invalid run and each NUL with "❌"."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # Invalid bytes (always >= 0x80) become lone surrogates, so one regex finds each run.
        text = _ESCAPED_RUN.sub(REPLACEMENT, raw.decode("utf-8", "surrogateescape"))
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    return text


def sanitize(text: str) -> str:
    """Make ``text`` valid for coderd: lone surrogates and NUL become "❌"."""
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATES.sub(REPLACEMENT, text)
    return text


def split_text(text: str) -> list[str]:
    """A multi-line string as log lines (same rules as the splitter; no trailing empty line)."""
    if "\n" not in text:
        return [text[:-1] if text.endswith("\r") else text]
    parts = text.split("\n")
    if parts[-1] == "":
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts]


def _cut(buf: bytes | bytearray, max_line: int) -> int:
    """Where to cut a too-long line: at ``max_line`` unless that is inside a UTF-8 sequence.

    Looks only at ``buf[max_line-3 : max_line+1]``, so the cut depends on the content alone.
    """
    cut = max_line
    while cut > max_line - 3 and 0x80 <= buf[cut] <= 0xBF:  # continuation byte: back off
        cut -= 1
    return max_line if 0x80 <= buf[cut] <= 0xBF else cut


class LineSplitter:
    """Bytes in, complete sanitised lines out. Feed chunks with :meth:`feed`, end with :meth:`close`."""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 8:
            raise ValueError("max_line must be at least 8 bytes")
        self.max_line = max_line
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete line."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[str]:
        out: list[str] = []
        if not data:
            return out
        buf = self._buf
        start = 0
        if not buf:
            # Fast path: most chunks hold many complete lines and no partial from before.
            nl = data.rfind(b"\n")
            if nl >= 0:
                for line in data[:nl].split(b"\n"):
                    self._emit_line(line, out)
                start = nl + 1
            rest = data[start:]
            if rest:
                buf += rest
                self._cut_long(out)
            return out
        nl = data.find(b"\n")
        if nl < 0:
            buf += data
            self._cut_long(out)
            return out
        buf += data[:nl]
        self._emit_line(bytes(buf), out)
        buf.clear()
        return out + self.feed(data[nl + 1:])

    def close(self) -> list[str]:
        """The partial last line, if any (the stream ended without a newline)."""
        out: list[str] = []
        if self._buf:
            self._emit_line(bytes(self._buf), out)
            self._buf.clear()
        return out

    def _emit_line(self, line: bytes, out: list[str]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        m = self.max_line
        while len(line) > m:
            c = _cut(line, m)
            out.append(sanitize_bytes(line[:c]))
            line = line[c:]
        out.append(sanitize_bytes(line))

    def _cut_long(self, out: list[str]) -> None:
        # Cut only once we know the line's content (after stripping a possible trailing \r)
        # is longer than max_line, so a line of exactly max_line + "\r\n" is never cut.
        buf, m = self._buf, self.max_line
        while len(buf) > m + 1 or (len(buf) == m + 1 and buf[-1] != 0x0D):
            c = _cut(buf, m)
            out.append(sanitize_bytes(bytes(buf[:c])))
            del buf[:c]


def format_time(t: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-01-01T00:00:00.000000Z``."""
    u = t.astimezone(dt.UTC)
    # %Y is not zero-padded below year 1000 on glibc ("999-..."), which no RFC 3339 parser takes
    return f"{u.year:04d}{u.strftime('-%m-%dT%H:%M:%S.%fZ')}"


def format_entry(ts: str, level: str, output: str) -> str:
    """One line of the local file (``output`` must hold no newline)."""
    return f"{ts} {level} {output}\n"


def parse_entry(line: str) -> tuple[str, str, str] | None:
    """``(created_at, level, output)`` of a local-file line, or None for markers and damage."""
    if not line or line[0] == "#":
        return None
    ts, sep, rest = line.partition(" ")
    if not sep:
        return None
    level, sep, output = rest.partition(" ")
    if not sep or level not in LEVELS:
        return None
    return ts, level, output
