"""The client's terminal modes (``pty-req``, RFC 4254 §8 and RFC 8160) applied to our PTY.

Pure: :func:`apply_modes` takes and returns a ``termios.tcgetattr`` list. As OpenSSH (and Go's pty
package) do: control characters (255 disables one), then the flags, each on or off; opcodes this
platform lacks, and unknown ones, are skipped. Speeds are ignored (a PTY has none worth setting).
"""

from __future__ import annotations

import termios
from collections.abc import Mapping
from typing import Any

__all__ = ["apply_modes"]

_CC = {1: "VINTR", 2: "VQUIT", 3: "VERASE", 4: "VKILL", 5: "VEOF", 6: "VEOL", 7: "VEOL2", 8: "VSTART",
       9: "VSTOP", 10: "VSUSP", 11: "VDSUSP", 12: "VREPRINT", 13: "VWERASE", 14: "VLNEXT", 15: "VFLUSH",
       16: "VSWTCH", 17: "VSTATUS", 18: "VDISCARD"}
_IFLAG, _OFLAG, _CFLAG, _LFLAG = 0, 1, 2, 3
_FLAGS = {
    30: (_IFLAG, "IGNPAR"), 31: (_IFLAG, "PARMRK"), 32: (_IFLAG, "INPCK"), 33: (_IFLAG, "ISTRIP"),
    34: (_IFLAG, "INLCR"), 35: (_IFLAG, "IGNCR"), 36: (_IFLAG, "ICRNL"), 37: (_IFLAG, "IUCLC"),
    38: (_IFLAG, "IXON"), 39: (_IFLAG, "IXANY"), 40: (_IFLAG, "IXOFF"), 41: (_IFLAG, "IMAXBEL"),
    42: (_IFLAG, "IUTF8"),
    50: (_LFLAG, "ISIG"), 51: (_LFLAG, "ICANON"), 52: (_LFLAG, "XCASE"), 53: (_LFLAG, "ECHO"),
    54: (_LFLAG, "ECHOE"), 55: (_LFLAG, "ECHOK"), 56: (_LFLAG, "ECHONL"), 57: (_LFLAG, "NOFLSH"),
    58: (_LFLAG, "TOSTOP"), 59: (_LFLAG, "IEXTEN"), 60: (_LFLAG, "ECHOCTL"), 61: (_LFLAG, "ECHOKE"),
    62: (_LFLAG, "PENDIN"),
    70: (_OFLAG, "OPOST"), 71: (_OFLAG, "OLCUC"), 72: (_OFLAG, "ONLCR"), 73: (_OFLAG, "OCRNL"),
    74: (_OFLAG, "ONOCR"), 75: (_OFLAG, "ONLRET"),
    90: (_CFLAG, "CS7"), 91: (_CFLAG, "CS8"), 92: (_CFLAG, "PARENB"), 93: (_CFLAG, "PARODD"),
}
_LINUX = {"IUTF8": 0o40000}  # missing from some Python builds' termios
_DISABLED = 255  # the SSH value for "no character"
_VDISABLE = 0  # Linux's _POSIX_VDISABLE


def _const(name: str) -> int | None:
    v = getattr(termios, name, None)
    return int(v) if isinstance(v, int) else _LINUX.get(name)


def apply_modes(attrs: list[Any], modes: Mapping[int, int]) -> list[Any]:
    """A copy of ``attrs`` with ``modes`` applied (see the module rules)."""
    out = [*attrs[:6], list(attrs[6])]
    cc: list[Any] = out[6]
    for op, value in modes.items():
        if op in _CC:
            idx = _const(_CC[op])
            if idx is not None and idx < len(cc):
                ch = _VDISABLE if value == _DISABLED else value & 0xFF
                cc[idx] = ch if isinstance(cc[idx], int) else bytes([ch])
        elif op in _FLAGS:
            where, name = _FLAGS[op]
            bit = _const(name)
            if bit is None:
                continue
            if name in ("CS7", "CS8"):  # a character size, not a single bit
                if value:
                    out[where] = (out[where] & ~termios.CSIZE) | bit
                continue
            out[where] = out[where] | bit if value else out[where] & ~bit
    return out
