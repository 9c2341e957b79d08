"""The reconnecting PTY (tunnel port 2): the dashboard's web terminal.

:mod:`.protocol` (sans I/O: the header, the input stream parser, the 64 KiB ring, the session
lifetime rule), :mod:`.ptyproc` (a process in its own PTY on asyncio), :mod:`.session` (the
session rules and the buffered backend), :mod:`.screen` (the GNU screen backend),
:mod:`.container` (``docker exec`` argv and the container shell probe), :mod:`.server`
(connections, reporting hooks; the tunnel calls :meth:`RptyServer.handle`, a loopback listener
serves splicing), :mod:`.service` (the daemon capability: ``make_service`` → the tunnel's port 2
service and a session counter, ``setup``).
"""

from __future__ import annotations

from .protocol import InitRequest, Input, InputParser, ProtocolError, RingBuffer, encode_init, encode_input, parse_init
from .server import RptyServer
from .session import RptySettings

__all__ = ["InitRequest", "Input", "InputParser", "ProtocolError", "RingBuffer", "RptyServer", "RptySettings",
           "encode_init", "encode_input", "parse_init"]
