"""The reconnecting-PTY wire format and session policy, sans I/O (Go's ``agent/reconnectingpty`` and
``workspacesdk.AgentReconnectingPTYInit`` / ``ReconnectingPTYRequest``).

Rules:

* **Header**: a 2-byte little-endian length, then that many bytes of JSON: ``ID`` (a UUID; the
  session key, canonicalised; absent or null is the zero UUID as in Go), ``Height``, ``Width``
  (uint16), ``Command``, ``Container``, ``ContainerUser``, ``BackendType`` (strings). Names match
  case-insensitively and the last matching key wins (Go's ``encoding/json``); null leaves the zero
  value; a wrong type, an out-of-range size, a non-object or bad JSON is a :class:`ProtocolError`
  (Go drops the connection). Unknown names are ignored.
* **Input**: concatenated JSON objects ``{"data":"…","height":N,"width":N}`` with optional
  whitespace between them, split across reads anywhere (even inside a UTF-8 sequence).
  :class:`InputParser` keeps its scan state, so a message fed byte by byte costs linear time.
  Anything but an object at the top level, bad JSON, a wrong field type or a message over
  ``max_message`` bytes is a :class:`ProtocolError`; the connection ends there (Go's
  ``readConnLoop`` returns on any decode error). A resize applies only when both sizes are
  non-zero (:attr:`Input.resize`).
* **Output** is raw PTY bytes; the last :data:`RING_SIZE` bytes are kept by :class:`RingBuffer`
  and replayed first to every connection that attaches.
* **Lifetime** (:class:`Lifetime`, Go's timer + heartbeat): a session not attached within
  ``attach_timeout`` (30 s, Go's ``attachTimeout``) of its creation closes; while at least one
  connection is attached it never expires; once the last one detaches it closes ``idle_timeout``
  (default 5 min) later unless another attaches first. Times are the caller's monotonic seconds.
"""

from __future__ import annotations

import codecs
import json
import struct
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["ATTACH_TIMEOUT", "IDLE_TIMEOUT", "RING_SIZE", "HeaderReader", "InitRequest", "Input",
           "InputParser", "Lifetime", "ProtocolError", "RingBuffer", "encode_init", "encode_input", "parse_init"]

RING_SIZE = 64 << 10
ATTACH_TIMEOUT = 30.0
IDLE_TIMEOUT = 300.0
ZERO_ID = str(uuid.UUID(int=0))


class ProtocolError(ValueError):
    """The peer sent something Go's agent would not decode; the connection ends."""


@dataclass(frozen=True)
class InitRequest:
    id: str = ZERO_ID
    height: int = 0
    width: int = 0
    command: str = ""
    container: str = ""
    container_user: str = ""
    backend_type: str = ""


@dataclass(frozen=True)
class Input:
    data: bytes = b""
    height: int = 0
    width: int = 0

    @property
    def resize(self) -> tuple[int, int] | None:
        """``(height, width)`` when both are non-zero, else None (no resize)."""
        return (self.height, self.width) if self.height and self.width else None


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs in order (duplicates kept, as Go sees them)."""


def _pairs(raw: bytes | str) -> _Pairs:
    try:
        value = json.loads(raw, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(f"invalid JSON: {e}") from None
    if not isinstance(value, _Pairs):
        raise ProtocolError("not a JSON object")
    return value


def _fold(pairs: _Pairs, names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        key = k.casefold()
        if key in names and v is not None:
            out[key] = v
    return out


def _u16(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFF:
        raise ProtocolError(f"{name} must be an integer 0-65535")
    return v


def _str(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ProtocolError(f"{name} must be a string")
    return v


_INIT_NAMES = ("id", "height", "width", "command", "container", "containeruser", "backendtype")


def parse_init(body: bytes) -> InitRequest:
    """The header's JSON body; raises :class:`ProtocolError`."""
    f = _fold(_pairs(body), _INIT_NAMES)
    sid = ZERO_ID
    if "id" in f:
        try:
            sid = str(uuid.UUID(_str("ID", f["id"])))
        except ValueError:
            raise ProtocolError("ID is not a UUID") from None
    return InitRequest(
        id=sid,
        height=_u16("Height", f.get("height", 0)),
        width=_u16("Width", f.get("width", 0)),
        command=_str("Command", f.get("command", "")),
        container=_str("Container", f.get("container", "")),
        container_user=_str("ContainerUser", f.get("containeruser", "")),
        backend_type=_str("BackendType", f.get("backendtype", "")),
    )


def encode_init(init: InitRequest) -> bytes:
    """The header a client sends (length prefix included); for clients and tests."""
    body = json.dumps({"ID": init.id, "Height": init.height, "Width": init.width, "Command": init.command,
                       "Container": init.container, "ContainerUser": init.container_user,
                       "BackendType": init.backend_type}).encode()
    return struct.pack("<H", len(body)) + body


class HeaderReader:
    """Collects the header from arbitrary chunks. :meth:`feed` returns ``(init, rest)`` once the
    header is complete (``rest``: the bytes after it, input already), else None."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need: int | None = None

    def feed(self, data: bytes) -> tuple[InitRequest, bytes] | None:
        self._buf += data
        if self._need is None:
            if len(self._buf) < 2:
                return None
            (self._need,) = struct.unpack_from("<H", self._buf)
            del self._buf[:2]
        if len(self._buf) < self._need:
            return None
        body, rest = bytes(self._buf[:self._need]), bytes(self._buf[self._need:])
        self._buf.clear()
        return parse_init(body), rest


_INPUT_NAMES = ("data", "height", "width")


class InputParser:
    """Splits the input stream into :class:`Input` messages (see the module rules)."""

    def __init__(self, max_message: int = 16 << 20) -> None:
        self.max_message = max_message
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._buf = ""
        self._pos = 0          # scan position in _buf
        self._start = -1       # where the current object began; -1 between objects
        self._depth = 0
        self._in_str = False
        self._esc = False

    def feed(self, data: bytes) -> list[Input]:
        """The messages completed by ``data``; raises :class:`ProtocolError`."""
        self._buf += self._utf8.decode(data)
        out: list[Input] = []
        buf = self._buf
        i, n = self._pos, len(buf)
        while i < n:
            c = buf[i]
            if self._start < 0:
                if c in " \t\r\n":
                    i += 1
                    continue
                if c != "{":
                    raise ProtocolError("input is not a JSON object")
                self._start, self._depth = i, 0
            if self._in_str:
                if self._esc:
                    self._esc = False
                elif c == "\\":
                    self._esc = True
                elif c == '"':
                    self._in_str = False
            elif c == '"':
                self._in_str = True
            elif c in "{[":
                self._depth += 1
            elif c in "}]":
                self._depth -= 1
                if self._depth == 0:
                    out.append(self._message(buf[self._start:i + 1]))
                    self._start = -1
            i += 1
        if self._start < 0:
            self._buf, self._pos = "", 0
        else:
            self._buf, self._pos = buf[self._start:], i - self._start
            self._start = 0
            if len(self._buf) > self.max_message:
                raise ProtocolError(f"input message over {self.max_message} bytes")
        return out

    @staticmethod
    def _message(text: str) -> Input:
        f = _fold(_pairs(text), _INPUT_NAMES)
        return Input(data=_utf8(_str("data", f.get("data", ""))),
                     height=_u16("height", f.get("height", 0)), width=_u16("width", f.get("width", 0)))


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate escape: U+FFFD, as Go decodes it
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


def encode_input(data: str | bytes = "", height: int = 0, width: int = 0) -> bytes:
    """One input message as a client sends it (fields omitted when empty, as Go's ``omitempty``)."""
    msg: dict[str, Any] = {}
    if data:
        msg["data"] = data.decode() if isinstance(data, bytes) else data
    if height:
        msg["height"] = height
    if width:
        msg["width"] = width
    return json.dumps(msg).encode()


class RingBuffer:
    """The last ``size`` bytes written."""

    def __init__(self, size: int = RING_SIZE) -> None:
        if size <= 0:
            raise ValueError("size must be positive")
        self.size = size
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        if len(data) >= self.size:
            self._buf[:] = data[-self.size:]
            return
        self._buf += data
        over = len(self._buf) - self.size
        if over > 0:
            del self._buf[:over]

    def bytes(self) -> bytes:
        return bytes(self._buf)

    def clear(self) -> None:
        self._buf.clear()

    def __len__(self) -> int:
        return len(self._buf)


class Lifetime:
    """When a session expires (see the module rules). ``deadline`` is None while attached."""

    def __init__(self, now: float, *, attach_timeout: float = ATTACH_TIMEOUT,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.idle_timeout = idle_timeout
        self.attached = 0
        self.deadline: float | None = now + attach_timeout

    def attach(self) -> None:
        self.attached += 1
        self.deadline = None

    def detach(self, now: float) -> None:
        if self.attached <= 0:
            raise RuntimeError("detach without attach")
        self.attached -= 1
        if self.attached == 0:
            self.deadline = now + self.idle_timeout

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline
