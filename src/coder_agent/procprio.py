"""CPU and OOM-killer priority of the processes the daemon starts (scripts, metadata commands,
the Dev Containers CLI).

The Go agent's contract (agent/agentexec), kept so templates need no edits: with
``CODER_PROC_PRIO_MGMT`` set (Linux), each child gets ``oom_score_adj`` = ``CODER_PROC_OOM_SCORE``
(default: 0 when the agent's is negative, 1000 when the agent's is >= 998, else 998) and nice =
``CODER_PROC_NICE_SCORE`` (default: the agent's + 5, at most 19), and the three variables are
removed from the child's environment.

Without it we still do one thing the Go agent does not: a daemon protected from the OOM killer
(``OOMScoreAdjust=-500`` in the unit) puts its children back at 0, so the user's processes never
inherit the protection meant for the agent (raising the score needs no privilege).

The child sets its own values before it runs anything: ``/bin/sh`` writes
``/proc/self/oom_score_adj`` and then execs the command (through ``nice`` for a higher nice
value), so the pid, and every process the command forks, carries them from the first instruction.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ENV_MGMT", "ENV_NICE", "ENV_OOM", "ChildPriority", "from_process", "plan"]

ENV_MGMT = "CODER_PROC_PRIO_MGMT"
ENV_OOM = "CODER_PROC_OOM_SCORE"
ENV_NICE = "CODER_PROC_NICE_SCORE"
_ENV_KEYS = (ENV_MGMT, ENV_OOM, ENV_NICE)

# $1: oom_score_adj or ""; $2: nice increment (0: none); then the command. A failure is said on the
# child's stderr (it lands in the script's log, where the template author looks) and never stops it.
_PRELUDE = ('o=$1 n=$2; shift 2; '
            'if [ -n "$o" ]; then { echo "$o" > /proc/self/oom_score_adj; } 2>/dev/null '
            '|| echo "coder-agent: cannot set oom_score_adj to $o" >&2; fi; '
            'if [ "$n" -gt 0 ]; then command -v nice >/dev/null 2>&1 && exec nice -n "$n" "$@"; '
            'echo "coder-agent: nice not found; niceness unchanged" >&2; fi; '
            'exec "$@"')


@dataclass(frozen=True)
class ChildPriority:
    """What to apply to each child: ``oom_score_adj`` (None: inherit) and a nice increment."""

    oom_score_adj: int | None = None
    nice_increment: int = 0
    managed: bool = False  # CODER_PROC_PRIO_MGMT: also strip the variables from the child's env
    sh: str = "/bin/sh"

    @property
    def active(self) -> bool:
        return self.oom_score_adj is not None or self.nice_increment > 0

    def wrap(self, argv: list[str]) -> list[str]:
        if not self.active:
            return argv
        oom = "" if self.oom_score_adj is None else str(self.oom_score_adj)
        return [self.sh, "-c", _PRELUDE, "coder-agent-exec", oom, str(self.nice_increment), *argv]

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        if not self.managed:
            return dict(env)
        return {k: v for k, v in env.items() if k not in _ENV_KEYS}

    def describe(self) -> dict[str, object]:
        return {"managed": self.managed, "oom_score_adj": self.oom_score_adj, "nice_increment": self.nice_increment}


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def default_oom(own: int) -> int:
    if own < 0:
        return 0
    return 1000 if own >= 998 else 998


def plan(environ: Mapping[str, str], own_oom: int | None, own_nice: int, *, linux: bool = True,
         sh: str | None = "/bin/sh") -> ChildPriority:
    """Pure: the children's priority from the environment and the daemon's own values."""
    if not linux or sh is None:
        return ChildPriority()
    if environ.get(ENV_MGMT, ""):
        oom = _int(environ.get(ENV_OOM))
        if oom is None and own_oom is not None:
            oom = default_oom(own_oom)
        nice = _int(environ.get(ENV_NICE))
        target = min(own_nice + 5, 19) if nice is None else max(-20, min(19, nice))
        # Lowering nice needs privilege the child does not have; like the Go agent we only try
        # what can work, and a higher value is always allowed.
        return ChildPriority(oom, max(0, target - own_nice), managed=True, sh=sh)
    if own_oom is not None and own_oom < 0:
        return ChildPriority(0, 0, sh=sh)
    return ChildPriority(sh=sh)


def from_process(environ: Mapping[str, str] | None = None) -> ChildPriority:
    """:func:`plan` for this process."""
    try:
        with open("/proc/self/oom_score_adj") as f:
            own_oom = _int(f.read())
    except OSError:
        own_oom = None
    sh = "/bin/sh" if os.access("/bin/sh", os.X_OK) else shutil.which("sh")
    return plan(os.environ if environ is None else environ, own_oom, os.getpriority(os.PRIO_PROCESS, 0),
                linux=sys.platform.startswith("linux"), sh=sh)
