"""What an idle daemon costs: CPU, wake-ups and RSS, connected to the devserver, Docker present.

One ``coder-agent run`` against ``python -m coder_agent.devserver`` with the defaults a new user
gets (devcontainers on: the Docker engine is followed when its socket is there; a workspace
directory holding one git project), no scripts, no listeners changing. After ``--settle``
seconds it measures, over ``--window`` seconds (60 by default):

* CPU time of the daemon as % of one core (goal ≤ 0.2 %), from its threads' scheduler run times (ns;
  clock ticks of 10 ms only if a thread ended during the window);
* ``wakeups_per_minute`` as the daemon's own loop counts them (``status --json``);
* RSS against a sleeping bare ``python`` in the same run (goal ≤ 4×), and both against the libraries
  alone: a bare ``python`` that imported, in the same order, every module the idle daemon has loaded
  except its own (read from the daemon's ``sys.modules`` through the tests' ``ModulesDaemon``
  wrapper), with what each package added;
* ``coder-agent --version`` against ``python -c pass`` (goal ≤ 2×).

Run: ``python -m bench.idle [--window S] [--settle S] [--quick]``. The machine's load shows in
every absolute number; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.conftest import ModulesDaemon

from ._util import (
    DevServerProcess,
    bare_python_rss_kib,
    cpu_seconds,
    cpu_seconds_between,
    library_floor,
    median_time,
    row,
    rss_kib,
    thread_cpu_ns,
)

PY = sys.executable


def _run(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--quick", action="store_true", help="a 20 s window")
    a = ap.parse_args()
    if a.quick:
        a.window, a.settle, a.runs = 20.0, 5.0, 5

    base_start = median_time(lambda: _run(PY, "-c", "pass"), a.runs)
    version = median_time(lambda: _run(PY, "-m", "coder_agent", "--version"), a.runs)

    ds = DevServerProcess()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-idle-", dir="/tmp") as d:
            tmp = Path(d)
            ws = tmp / "home"
            (ws / "project" / ".devcontainer").mkdir(parents=True)
            (ws / "project" / ".devcontainer" / "devcontainer.json").write_text('{"image": "busybox"}')
            subprocess.run(["git", "init", "-q", str(ws / "project")], check=True)
            sock = tmp / "api.sock"
            env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_AGENT_")}
            env.update({"CODER_AGENT_URL": ds.url, "CODER_AGENT_TOKEN": ds.token,
                        "CODER_AGENT_API_ADDRESS": f"unix:{sock}", "CODER_AGENT_LOG_DIR": str(tmp / "logs"),
                        "CODER_AGENT_STATE_DIR": str(tmp / "state"), "CODER_AGENT_DIRECTORY": str(ws)})
            daemon = ModulesDaemon(env, [], tmp).start()
            try:
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://a",
                                  timeout=5) as c:
                    daemon.wait_ready(60)
                    time.sleep(a.settle)
                    assert daemon.proc is not None
                    pid = daemon.proc.pid
                    cpu0, threads0, t0 = cpu_seconds(pid), thread_cpu_ns(pid), time.monotonic()
                    time.sleep(a.window)
                    fine = cpu_seconds_between(threads0, thread_cpu_ns(pid))
                    cpu = cpu_seconds(pid) - cpu0 if fine is None else fine
                    elapsed = time.monotonic() - t0
                    st = c.get("/api/v0/status").json()
                    rss = rss_kib(pid)
                    loaded, blocked = daemon.modules(), daemon.blocked_modules()
            finally:
                daemon.stop()
        base_rss = bare_python_rss_kib()
        libraries = [m for m in loaded if m.split(".")[0] not in ("coder_agent", "__main__")]
        floor_rss, shares, failed = library_floor(libraries, blocked)
    finally:
        ds.close()
    wakeups = st.get("wakeups_per_minute")
    dc = st.get("devcontainers") or {}
    print(f"Docker engine: {dc.get('state', 'off')} {dc.get('engine', '')}; file watch: {dc.get('watch', '-')}")
    print()
    print("| measure | coder-agent | baseline | ratio |")
    print("|---|---|---|---|")
    print(row("`--version` wall time (vs `python -c pass`)", version, base_start, "s"))
    print(row("idle RSS (vs bare `python` sleeping)", rss / 1024, base_rss / 1024, "MiB"))
    print(row(f"the libraries alone: bare `python` that imported the {len(libraries)} other modules the idle daemon "
              "has loaded (vs bare `python` sleeping)", floor_rss / 1024, base_rss / 1024, "MiB"))
    print(row("idle RSS (vs the libraries alone)", rss / 1024, floor_rss / 1024, "MiB"))
    print(f"| idle CPU over {elapsed:.0f} s | {cpu:.4f} s | goal 0.2 % | {cpu / elapsed * 100:.4f} % of one core |")
    print(f"| wake-ups in the last minute (the loop's own count) | {wakeups} | - | - |")
    print()
    top = sorted(shares.items(), key=lambda kv: -kv[1])
    print("What each package added to the libraries alone, imported in the daemon's order (with what it "
          "pulled in first): " + ", ".join(f"{k} {v / 1024:.1f}" for k, v in top[:12] if v > 0)
          + f", the rest {sum(v for _, v in top[12:]) / 1024:.1f} MiB.")
    if failed:
        print(f"Not importable on their own (left out): {', '.join(failed)}")


if __name__ == "__main__":
    main()
