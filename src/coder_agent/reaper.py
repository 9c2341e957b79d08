"""PID 1 without an init (USER-PAIN 13): ``coder-agent run`` as a container's entrypoint.

As PID 1 the daemon would inherit every orphan the workspace leaves behind (a script's
``server &``, a double fork) and never reap them: zombies pile up. Reaping them from inside the
daemon would race its own ``waitpid`` calls and steal its children's exit codes. So, like tini,
the process splits in two: PID 1 stays a tiny reaper — it forwards signals to the daemon, reaps
whatever ends up as its child, and exits with the daemon's exit code — and the daemon runs as its
child, in its own process group (a terminal's ^C then reaches PID 1 once, which forwards it once).

Only ``os`` and ``signal``: the reaper must not hold threads, sockets or an event loop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

__all__ = ["FORWARDED", "exit_code", "split_if_pid1"]

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def exit_code(status: int) -> int:
    """A wait status as a shell would report it (killed by signal N: 128 + N)."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def split_if_pid1() -> None:
    """When this process is PID 1 on Linux: fork; return in the child (the daemon); never return in
    PID 1, which reaps and forwards until the daemon exits, then exits with its code."""
    if os.getpid() != 1 or not sys.platform.startswith("linux"):
        return
    sys.stderr.flush()
    # Held back across the fork: a signal arriving in between waits for the forwarder.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    child = os.fork()
    if child == 0:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return
    _reap(child, old)


def _reap(child: int, mask: set[int | signal.Signals]) -> None:  # pragma: no cover - runs as PID 1 (tests/deploy)
    def forward(sig: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, sig)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    while True:
        try:
            pid, status = os.wait()  # any child: the daemon or an adopted orphan
        except ChildProcessError:
            os._exit(1)  # cannot happen while the daemon is unreaped; never spin
        if pid == child:
            os._exit(exit_code(status))
