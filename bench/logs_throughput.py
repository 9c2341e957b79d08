"""Lines per second through the whole log pipeline vs ``cat`` of the same input into a file.

script (``cat input``) → line splitter → local file → shipper → devserver (PATCH /me/logs),
measured until the devserver has every line. The 1 MiB cap is lifted on both sides for the run,
so every line really travels. Baseline: ``cat input > file`` in the same run.

    python -m bench.logs_throughput [--lines 200000] [--width 80]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path


async def _pipeline(tmp: Path, inp: Path, lines: int) -> tuple[float, float]:
    import coder_agent.devserver.app as dsapp
    from coder_agent.coderapi.client import CoderClient, FixedToken
    from coder_agent.devserver import DevServer
    from coder_agent.log import configure_logging
    from coder_agent.logs import LogPipeline, RestTransport
    from coder_agent.logsink import source_id_for
    from coder_agent.scripts import ScriptRunner, ScriptSpec, Stage
    from coder_agent.state import StateStore

    configure_logging(level="warning")
    dsapp.MAX_LOGS_LENGTH = 1 << 50  # type: ignore[attr-defined]
    async with DevServer() as ds:
        client = CoderClient(ds.url, FixedToken(ds.agent.token))
        p = LogPipeline(log_dir=tmp / "logs", store=StateStore(tmp / "state"), transport=RestTransport(client),
                        cap_limit=1 << 50)
        task = asyncio.create_task(p.run())
        runner = ScriptRunner(p, log_dir=tmp / "logs", data_dir=tmp / "state", flush_timeout=0)
        spec = ScriptSpec(id="bench", log_source_id=source_id_for("bench"), display_name="bench",
                          script=f"cat {inp}")
        t0 = time.perf_counter()
        await runner.run(spec, Stage.START)
        t_file = time.perf_counter() - t0
        await p.flush(timeout=600)
        t_ship = time.perf_counter() - t0
        assert len(ds.agent.logs) == lines, (len(ds.agent.logs), lines)
        task.cancel()
        p.close()
        await client.aclose()
    return t_file, t_ship


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--width", type=int, default=80)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as d:
        tmp = Path(d)
        inp = tmp / "input.txt"
        body = "x" * max(0, a.width - 12)
        inp.write_text("".join(f"{i:010d} {body}\n" for i in range(a.lines)))
        t0 = time.perf_counter()
        subprocess.run(f"cat {inp} > {tmp / 'cat.out'}", shell=True, check=True)
        t_cat = time.perf_counter() - t0
        t_file, t_ship = asyncio.run(_pipeline(tmp, inp, a.lines))
    n = a.lines
    print(f"input: {n} lines of {a.width} bytes ({n * a.width / 1e6:.1f} MB)")
    print(f"cat into a file:                 {n / t_cat:>12,.0f} lines/s  ({t_cat:.3f} s)")
    print(f"script -> local file:            {n / t_file:>12,.0f} lines/s  ({t_file:.3f} s)")
    print(f"script -> file -> shipper -> devserver: {n / t_ship:>12,.0f} lines/s  ({t_ship:.3f} s)")
    print(f"ratio pipeline/cat (end to end): {t_cat / t_ship:.4f}  (cat is {t_ship / t_cat:,.0f}x faster)")
    print(f"ratio local-file/cat:            {t_cat / t_file:.4f}")


if __name__ == "__main__":
    main()
