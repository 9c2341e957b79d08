"""Prebuild reinit latency against the daemon's own cold start, in the same run.

* cold start: spawn ``coder-agent run`` → the first session is ready
* reinit:     the claim event is sent → the new session is ready (same process)

"Ready" is the session's lifecycle READY when the daemon reports one (the agent RPC does); until
a session reports a lifecycle, it is the new session's start scripts having finished (status
``scripts.start_scripts`` "done" with a new run of the script). The criterion used is printed.
The start script is a no-op (``true``), so the numbers are the agent's own overhead.

Run: ``python -m bench.reinit [--runs N]``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ._util import DevServerProcess, row

PY = sys.executable
CONFIG = """
[[scripts]]
display_name = "noop"
script = "true"
run_on_start = true
"""


def _env(ds: DevServerProcess, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_AGENT_")}
    (tmp / "agent.toml").write_text(CONFIG)
    env.update({"CODER_AGENT_URL": ds.url, "CODER_AGENT_TOKEN": ds.token,
                "CODER_AGENT_API_ADDRESS": f"unix:{tmp / 'api.sock'}", "CODER_AGENT_CONFIG": str(tmp / "agent.toml"),
                "CODER_AGENT_LOG_DIR": str(tmp / "logs"), "CODER_AGENT_STATE_DIR": str(tmp / "state"),
                "CODER_AGENT_PROMETHEUS_ADDRESS": "", "CODER_AGENT_DEVCONTAINERS_ENABLE": "false",
                "CODER_AGENT_LOG_LEVEL": "warning"})
    return env


def _wait(c: httpx.Client, proc: subprocess.Popen[bytes], pred: Callable[[dict[str, Any]], bool],
          timeout: float = 60) -> dict[str, Any]:
    deadline = time.perf_counter() + timeout
    while True:
        try:
            st: dict[str, Any] = c.get("/api/v0/status").json()
            if pred(st):
                return st
        except (httpx.HTTPError, ValueError):
            pass
        if proc.poll() is not None:
            raise RuntimeError("daemon exited")
        if time.perf_counter() > deadline:
            raise RuntimeError("timed out waiting for the daemon")
        time.sleep(0.002)


def _last_run(st: dict[str, Any]) -> str | None:
    scripts = st.get("scripts", {}).get("scripts") or [{}]
    last = scripts[0].get("last_result") or {}
    start = last.get("start")
    return start if isinstance(start, str) else None


def _watching(duplicates: int) -> Callable[[dict[str, Any]], bool]:
    """The reinit watcher is watching again and has ignored at least ``duplicates`` claim events it
    had already handled."""

    def pred(st: dict[str, Any]) -> bool:
        return bool(st["reinit"]["state"] == "watching" and st["reinit"]["duplicates"] >= duplicates)

    return pred


def _ready(generation: int, use_lifecycle: bool, previous_run: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def pred(st: dict[str, Any]) -> bool:
        if st.get("session_generation") != generation or st.get("phase") != "running":
            return False
        if use_lifecycle:
            return st.get("lifecycle") == "ready"
        run = _last_run(st)
        return st.get("scripts", {}).get("start_scripts") == "done" and run is not None and run != previous_run

    return pred


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7, help="cold starts, and reinits per daemon")
    a = ap.parse_args()

    ds = DevServerProcess()
    ctl = httpx.Client(base_url=ds.url, timeout=10)
    ctl.post("/devserver/reinit/settings", json={"prebuild": True}).raise_for_status()
    cold: list[float] = []
    reinit: list[float] = []
    use_lifecycle = False
    try:
        with tempfile.TemporaryDirectory(prefix="bench-", dir="/tmp") as d:
            # One state dir for every daemon, like restarts of one workspace: the claims handled by an
            # earlier daemon are pre-seeded by the server and recognised as duplicates.
            tmp = Path(d)
            env = _env(ds, tmp)
            for i in range(a.runs):
                t0 = time.perf_counter()
                proc = subprocess.Popen([PY, "-m", "coder_agent", "run"], env=env, stderr=subprocess.DEVNULL)
                try:
                    with httpx.Client(transport=httpx.HTTPTransport(uds=str(tmp / "api.sock")),
                                      base_url="http://agent", timeout=2) as c:
                        if i == 0:
                            # Does a session report READY here? Decide the criterion once, for all runs.
                            _wait(c, proc, _ready(1, False))
                            try:
                                _wait(c, proc, _ready(1, True), timeout=10)
                                use_lifecycle = True
                            except RuntimeError:
                                use_lifecycle = False
                        else:  # the first run only calibrates (and warms the page cache)
                            _wait(c, proc, _ready(1, use_lifecycle))
                            cold.append(time.perf_counter() - t0)
                        if i == a.runs - 1 or i == 0:
                            # reinits within this daemon (the watcher must be connected first)
                            _wait(c, proc, lambda st: st.get("reinit", {}).get("state") == "watching")
                            for n in range(a.runs):
                                prev = _last_run(c.get("/api/v0/status").json())
                                t1 = time.perf_counter()
                                ctl.post("/devserver/reinit/claim", json={}).raise_for_status()
                                _wait(c, proc, _ready(n + 2, use_lifecycle, prev))
                                if i != 0:
                                    reinit.append(time.perf_counter() - t1)
                                _wait(c, proc, _watching(duplicates=n + 1))
                finally:
                    proc.terminate()
                    proc.wait(30)
    finally:
        ctl.close()
        ds.close()
    criterion = "lifecycle READY" if use_lifecycle else "start scripts done (no lifecycle reported yet)"
    c_med, r_med = statistics.median(cold), statistics.median(reinit)
    print(f"Ready criterion: {criterion}; {len(cold)} cold starts, {len(reinit)} reinits (medians).")
    print()
    print("| measure | coder-agent | baseline | ratio |")
    print("|---|---|---|---|")
    print(row("claim event → new session ready (vs cold start → first session ready)", r_med, c_med, "s"))
    print(f"| reinit min / max | {min(reinit):.4g} s / {max(reinit):.4g} s | | |")


if __name__ == "__main__":
    main()
