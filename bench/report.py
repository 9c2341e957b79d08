"""Run every benchmark in bench/ and write one Markdown report of their ratio tables.

``python -m bench.report [--quick] [--soak-minutes M] [--out bench/results/report.md]`` (``make
bench``). Each benchmark module is run as ``python -m bench.<name>`` (with ``--quick`` passed when
it accepts it), one after the other, so every table's baseline was measured alongside it. The
soak runs last (10 minutes, 1 with ``--quick``, or ``--soak-minutes``) and leaves
``soak-rss.png`` and ``soak-rss.csv`` next to the report.

The report opens with one summary table: every ratio any benchmark printed, either as a
Markdown row ``| measure | value | baseline | 1.23x |`` or as a line ``ratio NAME: 1.23``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"__init__", "_util", "report"}
LAST = ("soak",)  # long and steady: after the others, never beside them
_ROW = re.compile(r"^\|\s*(?P<m>[^|]+?)\s*\|\s*(?P<v>[^|]+?)\s*\|\s*(?P<b>[^|]+?)\s*\|\s*(?P<r>[0-9.]+|inf)x\s*\|$")
_LINE = re.compile(r"^ratio (?P<m>[^:]+):\s*(?P<r>[0-9.]+)")


_LOGLINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")  # a daemon's console log, not a result


def ratios(name: str, text: str) -> list[str]:
    """The summary rows for one benchmark's output.

    Also reads a whitespace table whose header ends with ratio columns named ``a/b``: one summary
    row per data row and ratio column, labelled by the row's first column.
    """
    out = []
    header: list[str] = []
    for line in text.splitlines():
        cells = line.split()
        if cells and any("/" in c for c in cells) and not any(ch.isdigit() for ch in line) and "|" not in line:
            header = cells
            continue
        ratio_cols = [h for h in header if "/" in h]  # the rightmost columns
        if ratio_cols and len(cells) >= len(ratio_cols) and all(_num(c) for c in cells):
            for h, c in zip(ratio_cols, cells[-len(ratio_cols):], strict=True):
                out.append(f"| {name} | {h} ({header[0]}={cells[0]}) | | | {c}x |")
            continue
        header = header if cells else []
        if m := _ROW.match(line.strip()):
            out.append(f"| {name} | {m['m']} | {m['v']} | {m['b']} | {m['r']}x |")
        elif m := _LINE.match(line.strip()):
            out.append(f"| {name} | ratio {m['m']} | | | {m['r']} |")
    return out


def _num(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def clean(text: str) -> str:
    return "".join(ln + "\n" for ln in text.splitlines() if not _LOGLINE.match(ln))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs (CI)")
    ap.add_argument("--out", default=str(HERE / "results" / "report.md"))
    ap.add_argument("--soak-minutes", type=float, default=None, help="soak length (default 10, 1 with --quick)")
    ap.add_argument("only", nargs="*", help="benchmark names (default: all)")
    a = ap.parse_args()
    names = a.only or sorted((p.stem for p in HERE.glob("*.py") if p.stem not in SKIP),
                             key=lambda n: (n in LAST, n))
    out = [f"# coder-agent benchmarks\n\n{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
           f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
           f"`python -m bench.report{' --quick' if a.quick else ''}"
           f"{f' --soak-minutes {a.soak_minutes:g}' if a.soak_minutes else ''}`\n"]
    summary = ["| benchmark | measure | value | same-run baseline | ratio |", "|---|---|---|---|---|"]
    sections: list[str] = []
    for name in names:
        args = [sys.executable, "-m", f"bench.{name}"]
        helptext = subprocess.run([*args, "--help"], capture_output=True, text=True).stdout
        if name == "soak":
            args += ["--out", str(Path(a.out).parent)]
            if a.soak_minutes:
                args += ["--minutes", f"{a.soak_minutes:g}"]
            elif a.quick:
                args.append("--quick")
        elif a.quick and "--quick" in helptext:
            args.append("--quick")
        t0 = time.monotonic()
        r = subprocess.run(args, capture_output=True, text=True, cwd=HERE.parent)
        took = time.monotonic() - t0
        shown = " ".join(args[1:]).replace(str(HERE.parent) + "/", "")
        sections.append(f"\n## {name}\n\n`{shown}` ({took:.0f} s)\n\n")
        failed = f"FAILED (exit {r.returncode}):\n\n```\n{r.stderr[-2000:]}\n```\n"
        if r.returncode == 0:
            stdout = clean(r.stdout)
            body = stdout if "|" in stdout else f"```\n{stdout.rstrip()}\n```\n"
            sections.append(body)
            summary += ratios(name, stdout)
        else:
            sections.append(failed)
            summary.append(f"| {name} | FAILED (exit {r.returncode}) | | | |")
        if name == "soak" and r.returncode == 0:
            sections.append("\n![RSS over the soak](soak-rss.png)\n")
        print(f"{name}: {'ok' if r.returncode == 0 else 'FAILED'} in {took:.0f} s", file=sys.stderr)
    out.append("\n## Summary: each ratio against a baseline measured in the same run\n\n")
    out.append("\n".join(summary) + "\n")
    out += sections
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(out))
    print(path.read_text())


if __name__ == "__main__":
    main()
