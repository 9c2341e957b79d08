"""Soak: the daemon's RSS over a long, busy run (default 10 minutes), sampled every second.

A real ``coder-agent run`` against the devserver (both child processes) with steady work:

* a start script that prints a line every 100 ms for the whole run (log pipeline → coderd),
* an app status posted every 2 s, alternating working/idle (queue → state dir → coderd),
* port churn: a listener opened on a new port and the previous one closed every second, and
  ``GET /api/v0/listening-ports`` asked every second (scanner caches, owner caches),
* ``GET /api/v0/status`` every second (what a dashboard does).

Every second the daemon's RSS and CPU time are read from /proc and written to
``bench/results/soak-rss.csv``; at the end ``soak-rss.png`` is drawn (matplotlib, from the
``bench`` extra) and a ratio table is printed: the end and peak RSS against the RSS after the
warm-up (the first minute, or the first 10 % of a shorter run), measured in the same run, and
the RSS trend after the warm-up and over the second half of the run.

    python -m bench.soak [--minutes 10] [--quick] [--out bench/results]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ._util import DevServerProcess, cpu_seconds, row, rss_kib

HERE = Path(__file__).resolve().parent


async def _soak(minutes: float, out: Path) -> list[tuple[float, float, float, int, int]]:
    tmp = Path(tempfile.mkdtemp(prefix="ca-soak-", dir="/tmp"))
    ds = DevServerProcess()
    cfg = tmp / "config.toml"
    cfg.write_text('[[scripts]]\ndisplay_name = "Steady printer"\n'
                   'script = "i=0; while true; do i=$((i+1)); echo steady line $i; sleep 0.1; done"\n')
    sock = tmp / "api.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_AGENT_")}
    env.update(CODER_AGENT_URL=ds.url, CODER_AGENT_TOKEN=ds.token, CODER_AGENT_CONFIG=str(cfg),
               CODER_AGENT_API_ADDRESS=f"unix:{sock}", CODER_AGENT_LOG_DIR=str(tmp / "logs"),
               CODER_AGENT_STATE_DIR=str(tmp / "state"), CODER_AGENT_PROMETHEUS_ADDRESS="",
               CODER_AGENT_LOG_LEVEL="warning", CODER_AGENT_DEVCONTAINERS_ENABLE="false",
               CODER_AGENT_DIRECTORY=str(tmp))
    proc = subprocess.Popen([sys.executable, "-m", "coder_agent", "run"], env=env, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    samples: list[tuple[float, float, float, int, int]] = []  # t, rss MiB, cpu s, shipped lines, ports
    listeners: list[socket.socket] = []
    client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(sock)), base_url="http://agent",
                               timeout=30)
    try:
        for _ in range(200):
            if sock.exists():
                break
            await asyncio.sleep(0.1)
        t0 = time.monotonic()
        cpu0 = cpu_seconds(proc.pid)
        end = t0 + minutes * 60
        i = 0
        ports_seen = 0
        while time.monotonic() < end:
            i += 1
            # port churn: one new listener, the oldest closed
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen()
            listeners.append(s)
            if len(listeners) > 1:
                listeners.pop(0).close()
            ports = (await client.get("/api/v0/listening-ports")).json()["ports"]
            ports_seen = len(ports)
            if i % 2 == 0:
                r = await client.post("/api/v0/app-status", json={
                    "app_slug": "claude-code", "state": "working" if i % 4 else "idle", "message": f"step {i}"})
                assert r.status_code == 202, r.text
            st = (await client.get("/api/v0/status")).json()
            shipped = sum(src.get("shipped_lines", 0) for src in (st.get("logs") or {}).get("sources", []))
            samples.append((time.monotonic() - t0, rss_kib(proc.pid) / 1024, cpu_seconds(proc.pid) - cpu0,
                            shipped, ports_seen))
            await asyncio.sleep(max(0.0, t0 + i - time.monotonic()))
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited during the soak: {proc.returncode}")
    finally:
        await client.aclose()
        for s in listeners:
            s.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        ds.close()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "soak-rss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seconds", "rss_mib", "cpu_seconds", "shipped_lines", "listening_ports"])
        for t, rss, cpu, shipped, ports in samples:
            w.writerow([f"{t:.1f}", f"{rss:.2f}", f"{cpu:.2f}", shipped, ports])
    return samples


def _slope(samples: list[tuple[float, float, float, int, int]]) -> float:
    """MiB/hour: the least-squares line through (seconds, RSS MiB)."""
    n = len(samples)
    mt = sum(s[0] for s in samples) / n
    mr = sum(s[1] for s in samples) / n
    var = sum((s[0] - mt) ** 2 for s in samples) or 1.0
    return sum((s[0] - mt) * (s[1] - mr) for s in samples) / var * 3600


def _plot(samples: list[tuple[float, float, float, int, int]], out: Path, warm: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = [s[0] / 60 for s in samples]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    ax.plot(ts, [s[1] for s in samples], lw=1.2, color="#2f6db5", label="daemon RSS")
    ax.axvline(warm / 60, color="#999", lw=0.8, ls="--", label="end of warm-up (baseline)")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MiB)")
    top = max(s[1] for s in samples)
    ax.set_ylim(0, top * 1.25)
    ax.set_title(f"coder-agent RSS over a {ts[-1]:.0f}-minute soak (script output, app statuses, port churn)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = out / "soak-rss.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.soak")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="1 minute")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    minutes = 1.0 if a.quick else a.minutes
    out = Path(a.out)
    samples = asyncio.run(_soak(minutes, out))
    if len(samples) < 10:
        raise SystemExit(f"too few samples ({len(samples)})")
    warm = min(60.0, samples[-1][0] * 0.1)
    base = next(s for s in samples if s[0] >= warm)[1]
    end_rss = samples[-1][1]
    peak = max(s[1] for s in samples)
    slope = _slope([s for s in samples if s[0] >= warm])
    # Bounded structures (the app-status history keeps 256 outcomes: ~8.5 minutes at one status
    # every 2 s) are still filling during the first minutes; the second half shows what remains.
    half = _slope([s for s in samples if s[0] >= samples[-1][0] / 2])
    plot = _plot(samples, out, warm)
    dur = samples[-1][0]
    print(f"{dur / 60:.1f}-minute soak, {len(samples)} samples (1/s); {samples[-1][3]} script lines shipped; "
          f"CPU {samples[-1][2]:.1f} s ({100 * samples[-1][2] / dur:.1f}% of one core)\n")
    print("| measure | coder-agent | baseline | ratio |")
    print("|---|---|---|---|")
    print(row("RSS at the end (vs after warm-up)", end_rss, base, "MiB"))
    print(row("peak RSS (vs after warm-up)", peak, base, "MiB"))
    print(f"\nRSS trend after warm-up: {slope:+.2f} MiB/hour; over the second half: {half:+.2f} MiB/hour "
          f"(least squares). Plot: {plot.name}, data: soak-rss.csv")
    print(json.dumps({"minutes": round(dur / 60, 2), "base_mib": round(base, 2), "end_mib": round(end_rss, 2),
                      "peak_mib": round(peak, 2), "slope_mib_per_hour": round(slope, 3),
                      "second_half_slope_mib_per_hour": round(half, 3)}), file=sys.stderr)


if __name__ == "__main__":
    main()
