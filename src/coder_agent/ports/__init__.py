"""Listening ports: what the workspace serves, found fast and served the way Coder asks for it.

* :mod:`.procnet` — pure parser of ``/proc/net/tcp`` and ``tcp6``.
* :mod:`.select` — pure filter / de-duplication into the wire shape.
* :mod:`.scan` — the readers (procfs fast path, psutil fallback) and the inode → process cache.
* :mod:`.service` — cached scans, change detection, ``/api/v0/listening-ports[/watch]``.
"""

from __future__ import annotations

from .scan import ScanError, Scanner, default_scanner
from .select import ListeningPort, select_ports, to_wire
from .service import PortsService, setup

__all__ = ["ListeningPort", "PortsService", "ScanError", "Scanner", "default_scanner", "select_ports", "setup",
           "to_wire"]
