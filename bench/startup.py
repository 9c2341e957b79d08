"""Start-up time and idle footprint of the daemon, as ratios against bare Python in the same run.

Measures, each against a baseline taken in this same process run:
* ``coder-agent --version`` wall time  vs  ``python -c pass``
* time until the local API answers after ``coder-agent run`` is spawned  vs  ``python -c pass``
* idle RSS of the running daemon (after it settled)  vs  RSS of ``python -c 'sleep'``
* idle CPU over a window  (absolute CPU seconds; the baseline process uses ~0)

Run: ``python -m bench.startup [--runs N] [--idle SECONDS]``. Prints a Markdown table.
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

from ._util import DevServerProcess, bare_python_rss_kib, cpu_seconds, median_time, row, rss_kib

PY = sys.executable


def _run(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def time_to_api(url: str, token: str, tmp: Path) -> tuple[float, subprocess.Popen[bytes]]:
    sock = tmp / "api.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_AGENT_")}
    env.update({"CODER_AGENT_URL": url, "CODER_AGENT_TOKEN": token, "CODER_AGENT_API_ADDRESS": f"unix:{sock}",
                "CODER_AGENT_LOG_DIR": str(tmp / "logs"), "CODER_AGENT_STATE_DIR": str(tmp / "state"),
                "CODER_AGENT_PROMETHEUS_ADDRESS": "", "CODER_AGENT_DEVCONTAINERS_ENABLE": "false"})
    t0 = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "coder_agent", "run"], env=env, stderr=subprocess.DEVNULL)
    transport = httpx.HTTPTransport(uds=str(sock))
    with httpx.Client(transport=transport, base_url="http://a", timeout=1) as c:
        while True:
            try:
                if c.get("/api/v0/status").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("daemon exited during start")
            time.sleep(0.005)
    return time.perf_counter() - t0, proc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--idle", type=float, default=5.0, help="seconds to let the daemon idle before measuring")
    a = ap.parse_args()

    base_start = median_time(lambda: _run(PY, "-c", "pass"), a.runs)
    version = median_time(lambda: _run(PY, "-m", "coder_agent", "--version"), a.runs)

    ds = DevServerProcess()
    try:
        api_times = []
        with tempfile.TemporaryDirectory(prefix="bench-", dir="/tmp") as d:
            for i in range(a.runs):
                tmp = Path(d) / str(i)
                tmp.mkdir()
                t, proc = time_to_api(ds.url, ds.token, tmp)
                api_times.append(t)
                if i < a.runs - 1:
                    proc.terminate()
                    proc.wait(30)
            time.sleep(a.idle)
            cpu0 = cpu_seconds(proc.pid)
            time.sleep(a.idle)
            idle_cpu = cpu_seconds(proc.pid) - cpu0
            daemon_rss = rss_kib(proc.pid)
            proc.terminate()
            proc.wait(30)
        base_rss = bare_python_rss_kib()
    finally:
        ds.close()
    api_times.sort()
    api = api_times[len(api_times) // 2]
    print("| measure | coder-agent | baseline | ratio |")
    print("|---|---|---|---|")
    print(row("`--version` wall time (vs `python -c pass`)", version, base_start, "s"))
    print(row("spawn → local API answers (vs `python -c pass`)", api, base_start, "s"))
    print(row("idle RSS (vs bare `python` sleeping)", daemon_rss / 1024, base_rss / 1024, "MiB"))
    print(f"| idle CPU over {a.idle:.0f} s | {idle_cpu:.3f} s | 0 s | {idle_cpu / a.idle * 100:.2f}% of one core |")


if __name__ == "__main__":
    main()
