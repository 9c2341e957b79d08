"""The daemon's peak RSS while a start script prints a lot of output, against the same daemon idle.

Runs ``coder-agent run`` as a real process against the devserver with one ``[[scripts]]`` entry
that prints ``--size`` bytes in 100-byte lines; reads the daemon's VmHWM (peak RSS) from /proc
once the script has finished and its output is in the local files. Baseline: the same daemon's
peak RSS with a script that prints one line (the daemon as it idles), measured in the same run.
Memory is judged by flatness (the ratio), not by an absolute figure. Default settings, on this
machine's Docker engine and as on a machine without one (the docker SDK is the difference).

    python -m bench.logs_rss [--size 1G]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1G, 100M)")
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]


def _hwm_kb(pid: int) -> int:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmHWM:"):
            return int(ln.split()[1])
    return 0


async def _run(size: int, tmp: Path, engine: bool) -> tuple[float, float]:
    from coder_agent.devserver import DevServer

    line = "y" * 99
    script = f"yes {line} | head -c {size}" if size > 100 else "echo one"
    async with DevServer() as ds:
        tmp.mkdir(parents=True, exist_ok=True)
        cfg = tmp / "config.toml"
        cfg.write_text(f'[[scripts]]\ndisplay_name = "Big output"\nscript = "{script}"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_AGENT_")}
        env.update(CODER_AGENT_URL=ds.url, CODER_AGENT_TOKEN=ds.agent.token, CODER_AGENT_CONFIG=str(cfg),
                   CODER_AGENT_API_ADDRESS=f"unix:{tmp / 'api.sock'}", CODER_AGENT_LOG_DIR=str(tmp / "logs"),
                   CODER_AGENT_STATE_DIR=str(tmp / "state"), CODER_AGENT_PROMETHEUS_ADDRESS="",
                   CODER_AGENT_LOG_LEVEL="warning")
        if not engine:  # a machine without Docker: nothing answers where the engine would be
            env["DOCKER_HOST"] = f"unix://{tmp / 'no-docker.sock'}"
        proc = subprocess.Popen([sys.executable, "-m", "coder_agent", "run"], env=env,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        t0 = time.perf_counter()
        client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(tmp / "api.sock")),
                                   base_url="http://agent")
        try:
            while True:
                await asyncio.sleep(0.5)
                if proc.poll() is not None:
                    raise SystemExit(f"daemon exited {proc.returncode}")
                try:
                    st = (await client.get("/api/v0/status")).json()
                except httpx.HTTPError:
                    continue
                if st.get("scripts", {}).get("start_scripts") not in ("pending", "running"):
                    break
            elapsed = time.perf_counter() - t0
            return _hwm_kb(proc.pid) / 1024, elapsed  # MiB
        finally:
            await client.aclose()
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=_size, default=_size("1G"), help="bytes the script prints (default 1G)")
    a = ap.parse_args()
    for engine, label in ((True, ""), (False, " (no Docker engine)")):
        with tempfile.TemporaryDirectory(prefix="bench-rss-") as d:
            base, _ = asyncio.run(_run(0, Path(d) / "base", engine))
        with tempfile.TemporaryDirectory(prefix="bench-rss-") as d:
            peak, secs = asyncio.run(_run(a.size, Path(d) / "big", engine))
        print("default settings, a Docker engine on the machine (the devcontainers feature loads the docker SDK)"
              if engine else "default settings, no Docker engine on the machine (DOCKER_HOST names a missing socket)")
        print(f"  daemon peak RSS, one-line script (idle):  {base:7.1f} MiB")
        print(f"  daemon peak RSS, {a.size / (1 << 20):,.0f} MiB of output:  {peak:7.1f} MiB  "
              f"(script done in {secs:.1f} s, {a.size / (1 << 20) / secs:.0f} MiB/s)")
        print(f"ratio big/baseline{label}: {peak / base:.2f}")


if __name__ == "__main__":
    main()
