"""`coder-agent run` as PID 1 of its own PID namespace, as a container entrypoint without an
init (util-linux `unshare --pid --fork`): orphans the workspace leaves behind are adopted by
PID 1 and reaped, not left as zombies; SIGTERM to PID 1 reaches the daemon, which stops
gracefully, and PID 1 exits with the daemon's exit code."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from coder_agent.devserver import DevServer
from coder_agent.logsink import source_id_for
from tests.conftest import apoll

from .conftest import _need


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _stat(pid: int) -> tuple[str, str]:
    """(comm, state) of a host pid, or ("", "") when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "", ""
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    return comm, raw[raw.rindex(")") + 2]


async def test_pid1_reaps_orphans_and_forwards_sigterm(  # type: ignore[no-untyped-def]
        devserver: DevServer, daemon_env, short_tmp: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        _need("unshare as root", "a PID namespace is how PID 1 is tested")
    cfg = short_tmp / "agent.toml"
    # Three double-forked sleeps: their parent subshell exits at once, so they are orphans.
    cfg.write_text('[[scripts]]\ndisplay_name = "orphans"\n'
                   'script = "for i in 1 2 3; do (sleep 3 &); done; echo orphans left"\n')
    env = daemon_env(devserver.url, devserver.agent.token, CODER_AGENT_CONFIG=str(cfg))
    err = (short_tmp / "stderr").open("wb")
    outer = subprocess.Popen(["unshare", "--pid", "--fork", sys.executable, "-m", "coder_agent", "run"],
                             env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        pid1 = (await apoll(lambda: _children(outer.pid)))[0]  # PID 1 inside, seen with its host pid
        await apoll(lambda: any(row["output"] == "orphans left" for row in devserver.agent.logs
                                if row["log_source_id"] == source_id_for("orphans")), timeout=30)
        # PID 1 is the reaper, not the daemon: the daemon is its child, in its own process group.
        daemon = [c for c in _children(pid1) if _stat(c)[0] != "sleep"]
        assert len(daemon) == 1 and os.getpgid(daemon[0]) == daemon[0]
        # The orphans were adopted by PID 1 (not by the daemon, which would never wait for them) ...
        await apoll(lambda: sum(_stat(c)[0] == "sleep" for c in _children(pid1)) == 3)
        sleeps = [c for c in _children(pid1) if _stat(c)[0] == "sleep"]
        # ... and once they exit they are reaped: gone, not zombies (state Z) under PID 1.
        await apoll(lambda: all(_stat(p) == ("", "") for p in sleeps), timeout=20)
        os.kill(pid1, signal.SIGTERM)  # what `docker stop` does
        rc = await asyncio.to_thread(outer.wait, 30)
        assert rc == 0
        assert "coder-agent stopped" in (short_tmp / "stderr").read_text()
    finally:
        if outer.poll() is None:
            os.killpg(outer.pid, signal.SIGKILL)
            outer.wait()
        err.close()


def test_exit_code_is_what_a_shell_would_report() -> None:
    from coder_agent.reaper import exit_code

    assert exit_code(0) == 0
    assert exit_code(78 << 8) == 78  # exited 78
    assert exit_code(signal.SIGTERM) == 128 + signal.SIGTERM  # killed by SIGTERM
    assert exit_code(signal.SIGKILL) == 137
