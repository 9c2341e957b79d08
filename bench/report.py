"""Run every benchmark in bench/ and write one Markdown report of their ratio tables.

``python -m bench.report [--quick] [--out bench/results/report.md]``. Each benchmark module is
run as ``python -m bench.<name>`` (with ``--quick`` passed when it accepts it) in this process
run, so every table's baseline was measured alongside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"__init__", "_util", "report"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs (CI)")
    ap.add_argument("--out", default=str(HERE / "results" / "report.md"))
    ap.add_argument("only", nargs="*", help="benchmark names (default: all)")
    a = ap.parse_args()
    names = a.only or sorted(p.stem for p in HERE.glob("*.py") if p.stem not in SKIP)
    out = [f"# coder-agent benchmarks\n\n{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
           f"{platform.machine()}, Python {platform.python_version()}\n"]
    for name in names:
        args = [sys.executable, "-m", f"bench.{name}"]
        helptext = subprocess.run([*args, "--help"], capture_output=True, text=True).stdout
        if a.quick and "--quick" in helptext:
            args.append("--quick")
        t0 = time.monotonic()
        r = subprocess.run(args, capture_output=True, text=True, cwd=HERE.parent)
        took = time.monotonic() - t0
        out.append(f"\n## {name}\n\n`{' '.join(args[1:])}` ({took:.0f} s)\n\n")
        failed = f"FAILED (exit {r.returncode}):\n\n```\n{r.stderr[-2000:]}\n```\n"
        out.append(r.stdout if r.returncode == 0 else failed)
        print(f"{name}: {'ok' if r.returncode == 0 else 'FAILED'} in {took:.0f} s", file=sys.stderr)
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(out))
    print(path.read_text())


if __name__ == "__main__":
    main()
