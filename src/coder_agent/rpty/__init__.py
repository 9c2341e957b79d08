"""The reconnecting PTY (tunnel port 2): the dashboard's web terminal.

:mod:`.protocol` (sans I/O: the header, the input stream parser, the 64 KiB ring, the session
lifetime rule), :mod:`.container` (``docker exec`` argv and the container shell probe),
:mod:`.server` (sessions, PTYs and connections on asyncio; the tunnel calls
:meth:`RptyServer.handle`, a loopback listener serves splicing).
"""

from __future__ import annotations

from .protocol import InitRequest, Input, InputParser, ProtocolError, RingBuffer, encode_init, encode_input, parse_init
from .server import RptyServer, RptySettings

__all__ = ["InitRequest", "Input", "InputParser", "ProtocolError", "RingBuffer", "RptyServer", "RptySettings",
           "encode_init", "encode_input", "parse_init"]
