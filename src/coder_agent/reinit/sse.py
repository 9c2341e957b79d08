"""A server-sent-events parser, sans I/O: bytes in, events out.

Rules (the WHATWG "event stream interpretation", with the two deviations noted):

* Lines end with CRLF, LF or CR; a CRLF split across two chunks is still one line ending.
  A UTF-8 byte-order mark at the very start of the stream is skipped.
* A line starting with ``:`` is a comment (ignored). Otherwise ``field: value``; one space
  after the colon is dropped; a line without a colon is a field with an empty value.
* ``event`` sets the type, ``data`` appends a line (several are joined with ``\\n``), ``id``
  sets the last event id (ignored if it contains NUL), ``retry`` sets :attr:`SSEParser.retry`
  (milliseconds) when it is all ASCII digits. Unknown fields are ignored.
* A blank line dispatches the event if it has data. Deviation 1: an event with a type but no
  data is dispatched too (coderd's keep-alive is ``event: ping`` + blank line, no data line,
  and a watcher needs to see it). A blank line after nothing, after comments, or after only
  ``id``/``retry`` lines dispatches nothing.
* Deviation 2: a line longer than ``max_line`` bytes raises :class:`SSEError` (a server that
  never ends a line must not grow our memory); the caller drops the connection.
* An incomplete event at the end of the stream is discarded (``close()`` says whether one was).
* Lines are decoded as UTF-8 with replacement characters, never raising.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProtocolError

__all__ = ["DEFAULT_MAX_LINE", "SSEError", "SSEEvent", "SSEParser"]

DEFAULT_MAX_LINE = 1 << 20
_BOM = b"\xef\xbb\xbf"


class SSEError(ProtocolError):
    """The event stream broke a rule we enforce (an over-long line)."""


@dataclass(frozen=True)
class SSEEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None  # the last event id at dispatch time


class SSEParser:
    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self.last_id: str | None = None
        self.retry: int | None = None  # the server's requested reconnection delay, ms
        self._buf = bytearray()
        self._skip_lf = False  # the previous chunk ended with CR: a leading LF belongs to it
        self._bom_pending = True
        self._type = ""
        self._data: list[str] = []
        self._fields = False  # an event or data line was seen since the last dispatch

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk``; return the events it completes, in order."""
        if self._bom_pending:
            # The BOM may itself arrive split; hold back until we can tell.
            self._buf += chunk
            if len(self._buf) < len(_BOM) and _BOM.startswith(bytes(self._buf)):
                return []
            self._bom_pending = False
            if self._buf.startswith(_BOM):
                del self._buf[: len(_BOM)]
            chunk, self._buf = bytes(self._buf), bytearray()
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        out: list[SSEEvent] = []
        buf = self._buf
        buf += chunk
        start = 0
        n = len(buf)
        while start < n:
            cr = buf.find(b"\r", start)
            lf = buf.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            if cr < 0 or (0 <= lf < cr):
                end, nxt = lf, lf + 1
            elif cr + 1 < n:
                end, nxt = cr, cr + (2 if buf[cr + 1] == 0x0A else 1)
            else:  # CR is the last byte: it ends the line; an LF may follow in the next chunk
                end, nxt = cr, cr + 1
                self._skip_lf = True
            if end - start > self.max_line:
                raise SSEError(f"event stream line longer than {self.max_line} bytes")
            ev = self._line(bytes(buf[start:end]))
            if ev is not None:
                out.append(ev)
            start = nxt
        del buf[:start]
        if len(buf) > self.max_line:
            raise SSEError(f"event stream line longer than {self.max_line} bytes")
        return out

    def close(self) -> bool:
        """End of stream. True if an incomplete event (or line) was discarded."""
        pending = bool(self._buf) or self._fields
        self._buf.clear()
        self._reset()
        return pending

    def _reset(self) -> None:
        self._type = ""
        self._data = []
        self._fields = False

    def _line(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            if not self._fields:
                return None
            ev = SSEEvent(self._type or "message", "\n".join(self._data), self.last_id)
            self._reset()
            return ev
        line = raw.decode("utf-8", "replace")
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._type = value
            self._fields = True
        elif name == "data":
            self._data.append(value)
            self._fields = True
        elif name == "id":
            if "\x00" not in value:
                self.last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None
