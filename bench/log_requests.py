"""Log requests per 10 000 lines: coder-agent's shipper against the devserver, beside the Go
agent's LogSender figure computed from its constants (flushInterval 1 s, maxBytesPerBatch 1 MiB,
21 bytes of overhead per line; coder/coder agent/logs.go).

Two shapes of output from a real script through the real pipeline and RPC transport:
``burst`` (all lines at once) and ``stream`` (the lines spread over ``--seconds``).

    python -m bench.log_requests [--lines 10000] [--width 80] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from pathlib import Path

GO_FLUSH_INTERVAL = 1.0
GO_MAX_BYTES_PER_BATCH = 1 << 20
GO_OVERHEAD_PER_LOG = 21


def go_requests(lines: int, width: int, seconds: float) -> int:
    """Requests the Go LogSender needs: at least one per flush interval the output lasts, and at
    least what its byte limit allows per request."""
    by_bytes = math.ceil(lines * (width + GO_OVERHEAD_PER_LOG) / GO_MAX_BYTES_PER_BATCH)
    by_time = max(1, math.ceil(seconds / GO_FLUSH_INTERVAL))
    return max(by_bytes, by_time)


async def _run(tmp: Path, lines: int, width: int, seconds: float) -> tuple[int, float]:
    import coder_agent.devserver.app as dsapp
    from coder_agent import logs
    from coder_agent.agentrpc import new_session
    from coder_agent.config import load_settings
    from coder_agent.daemon import Daemon
    from coder_agent.devserver import DevServer
    from coder_agent.devserver.rpc import record
    from coder_agent.log import configure_logging

    configure_logging(level="warning")
    dsapp.MAX_LOGS_LENGTH = 1 << 50  # type: ignore[attr-defined]
    body = "x" * max(0, width - 11)
    pause = seconds / lines
    script = (f"python3 -c 'import sys, time\nfor i in range({lines}):\n"
              f"    print(f\"{{i:010d}} {body}\", flush=True)\n    time.sleep({pause!r}) if {pause!r} else None'")
    async with DevServer() as ds:
        ds.agent.scripts = [{"display_name": "bench", "script": script, "run_on_start": True}]
        settings = load_settings({}, env={
            "CODER_AGENT_URL": ds.url, "CODER_AGENT_TOKEN": ds.agent.token,
            "CODER_AGENT_API_ADDRESS": f"unix:{tmp / 'api.sock'}", "CODER_AGENT_LOG_DIR": str(tmp / "logs"),
            "CODER_AGENT_STATE_DIR": str(tmp / "state"), "CODER_AGENT_PROMETHEUS_ADDRESS": ""})
        daemon = Daemon(settings)
        pipeline = logs.make_pipeline(settings=daemon.settings, store=daemon.store, client=daemon.client,
                                      clock=daemon.clock)
        daemon.log_sink = pipeline
        tasks = []
        for svc in logs.setup(pipeline, settings=daemon.settings, store=daemon.store, routes=daemon.local_api,
                              status=daemon.status_keys):
            tasks.append(asyncio.create_task(svc.run()))
        pipeline.cap.limit = 1 << 50
        session = new_session(daemon.agent_parts())
        t0 = time.perf_counter()
        await session.start()
        while len(ds.agent.logs) < lines:
            await asyncio.sleep(0.05)
        took = time.perf_counter() - t0
        n = len(record(ds.agent).log_batches)
        await session.shutdown()
        for t in tasks:
            t.cancel()
    return n, took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--width", type=int, default=80)
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    print(f"{a.lines} lines of {a.width} bytes; requests (BatchCreateLogs) per 10 000 lines")
    for shape, seconds in (("burst", 0.0), ("stream", a.seconds)):
        with tempfile.TemporaryDirectory(prefix="bench-logreq-", dir="/tmp") as d:
            n, took = asyncio.run(_run(Path(d), a.lines, a.width, seconds))
        ours = n * 10_000 / a.lines
        go = go_requests(a.lines, a.width, max(seconds, took if shape == "stream" else 0.0)) * 10_000 / a.lines
        print(f"{shape:>6} ({took:5.1f} s): coder-agent {ours:8.1f}   Go LogSender {go:8.1f}")
        print(f"ratio requests {shape} coder-agent/Go: {ours / go:.2f}")


if __name__ == "__main__":
    main()
