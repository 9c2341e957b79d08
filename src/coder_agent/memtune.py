"""glibc malloc: keep large buffers out of the heap, so memory they used goes back to the system.

Rules:

* glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` (128 KiB) with its own mapping,
  returned to the system when freed. But by default the threshold is *dynamic*: freeing such a
  block raises it to that block's size (up to 32 MiB), and from then on blocks of that size come
  from the heap, whose freed space the process keeps. The daemon's large blocks are log batches
  (up to 1 MiB, Go's batch size) and their copies through dRPC, yamux and the websocket; with a
  dynamic threshold each batch left ~2 MiB of RSS behind (bench.logs_rss).
* :func:`fix_mmap_threshold` sets the threshold once, at 128 KiB, which also turns the dynamic
  adjustment off. Only the daemon's process calls it, at start.
* Not on glibc (musl, another OS), or when the operator tuned malloc through its environment
  (``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``): nothing is changed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

__all__ = ["MMAP_THRESHOLD", "fix_mmap_threshold"]

MMAP_THRESHOLD = 128 * 1024  # glibc's default starting value
_M_MMAP_THRESHOLD = -3  # <malloc.h>


def fix_mmap_threshold(environ: Mapping[str, str] = os.environ) -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD`; True when it was set."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in environ or "GLIBC_TUNABLES" in environ:
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        if not hasattr(libc, "gnu_get_libc_version"):
            return False  # musl's mallopt is a stub
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
