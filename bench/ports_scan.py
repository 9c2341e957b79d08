"""Listening-port scan time against the physical floor and against psutil.

    python -m bench.ports_scan [--sizes 10,1000,5000] [--reps 15]

For each size N a child process opens N listening sockets (half on 127.0.0.1, half on ::1,
RLIMIT_NOFILE raised). In the same run we time (medians of ``--reps`` runs, each paired with a
raw read so that load from elsewhere on the host hits both alike):

* raw     — reading /proc/net/tcp and /proc/net/tcp6 into memory, nothing else (the floor of
            any procfs reader);
* ours    — coder-agent's scan through its procfs reader (+ owner cache + filter/dedupe), warm:
            what every scan costs while nothing changes, where netlink is refused;
* cold    — the same scan from scratch (every line parsed, one full /proc/<pid>/fd walk): the
            worst case of a change (a change of one socket parses one line and walks until found);
* psutil  — psutil.net_connections("inet"), unfiltered (what "just use psutil" costs);
* sock_diag — the daemon's own scan (``default_scanner()``: a NETLINK_SOCK_DIAG dump of the
            listening sockets + the same owner cache + filter/dedupe), warm; it reads no /proc/net
            table, so it can beat the raw floor. "n/a" where netlink is refused (the daemon then
            scans as ``ours``).

and print the ratios. The tables hold every socket on the host, not only ours, so the line
count is printed too.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

CHILD = r"""
import resource, socket, sys
n = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 256)), hard))
socks = []
for i in range(n):
    fam, host = (socket.AF_INET, "127.0.0.1") if i % 2 == 0 else (socket.AF_INET6, "::1")
    s = socket.socket(fam)
    s.bind((host, 0))
    s.listen(1)
    socks.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


def _paired_ms(fn: Callable[[], object], base: Callable[[], object], reps: int) -> tuple[float, float, float]:
    """Median ms of ``fn``, of ``base``, and median per-pair ratio; the two run alternately so
    that load from other processes on the host hits both alike."""
    a, b, ratios = [], [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        base()
        t1 = time.perf_counter()
        fn()
        t2 = time.perf_counter()
        b.append(t1 - t0)
        a.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    return statistics.median(a) * 1000, statistics.median(b) * 1000, statistics.median(ratios)


def _raw() -> int:
    total = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path, "rb") as f:
                total += len(f.read())
        except FileNotFoundError:
            pass
    return total


def main() -> int:
    import psutil

    from coder_agent.ports.scan import OwnerCache, ProcNetReader, Scanner, SockDiagReader, default_scanner
    from coder_agent.ports.select import PortSelector

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,1000,5000")
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def ours_with(owners: OwnerCache) -> Callable[[], object]:
        scanner = Scanner([ProcNetReader(owners=owners)])
        selector = PortSelector()
        return lambda: selector.select(scanner.scan().listeners)

    def daemons() -> tuple[SockDiagReader, Callable[[], object]]:
        """The daemon's scan (as ports.service builds it), and its sock_diag reader: while that
        reader's ``unavailable`` stays empty, every scan went through netlink (a failure is final)."""
        scanner = default_scanner()
        reader = scanner.readers[0]
        assert isinstance(reader, SockDiagReader), f"the daemon's first reader is {reader.name}"
        selector = PortSelector()
        return reader, lambda: selector.select(scanner.scan().listeners)

    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(n)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                print(f"child could not open {n} listeners", file=sys.stderr)
                return 1
            warm = OwnerCache()
            scan = ours_with(warm)
            found = scan()
            assert isinstance(found, list)
            lines = 0
            for p in ("/proc/net/tcp", "/proc/net/tcp6"):
                with open(p, "rb") as f:
                    lines += f.read().count(b"\n") - 1
            walks = warm.walks
            ours, raw, r_ours = _paired_ms(scan, _raw, args.reps)
            cold, _, r_cold = _paired_ms(lambda: ours_with(OwnerCache())(), _raw, max(3, args.reps // 3))
            ps, _, r_ps = _paired_ms(lambda: psutil.net_connections("inet"), _raw, max(3, args.reps // 3))
            if warm.walks > walks:
                print(f"note: {warm.walks - walks} /proc walks during the warm runs for N={n} "
                      "(sockets came and went elsewhere on the host)", file=sys.stderr)
            diag_reader, diag_scan = daemons()
            diag_found = diag_scan()
            diag: tuple[float, float, float] | None = None
            if not diag_reader.unavailable:
                assert isinstance(diag_found, list)
                if len(diag_found) != len(found):
                    print(f"note: sock_diag found {len(diag_found)} ports, procfs {len(found)} for N={n} "
                          "(sockets came and went elsewhere on the host)", file=sys.stderr)
                walks = diag_reader.owners.walks
                diag = _paired_ms(diag_scan, _raw, args.reps)
                if diag_reader.owners.walks > walks:
                    print(f"note: {diag_reader.owners.walks - walks} /proc walks during the sock_diag runs "
                          f"for N={n} (sockets came and went elsewhere on the host)", file=sys.stderr)
            if diag_reader.unavailable:
                print(f"note: no sock_diag row for N={n}: {diag_reader.unavailable}", file=sys.stderr)
                diag = None
            rows.append((n, lines, len(found), raw, ours, cold, ps, r_ours, r_cold, r_ps, diag))
        finally:
            child.kill()
            child.wait()

    print(f"{'listeners':>9} {'lines':>6} {'ports':>6} {'raw ms':>8} {'ours ms':>8} {'cold ms':>8} "
          f"{'psutil ms':>9} {'sock_diag ms':>12} {'ours/raw':>8} {'cold/raw':>8} {'psutil/raw':>10} "
          f"{'psutil/ours':>11} {'sock_diag/raw':>13} {'ours/sock_diag':>14}")
    for n, lines, ports, raw, ours, cold, ps, r_ours, r_cold, r_ps, diag in rows:
        d_ms, d_raw, d_ours = ((f"{diag[0]:.2f}", f"{diag[2]:.2f}", f"{r_ours / diag[2]:.2f}") if diag
                               else ("n/a", "n/a", "n/a"))
        print(f"{n:>9} {lines:>6} {ports:>6} {raw:>8.2f} {ours:>8.2f} {cold:>8.2f} {ps:>9.2f} {d_ms:>12} "
              f"{r_ours:>8.2f} {r_cold:>8.2f} {r_ps:>10.2f} {r_ps / r_ours:>11.2f} {d_raw:>13} {d_ours:>14}")
    print("ratios are medians of paired runs (each run timed right after a raw read); "
          "'ports' is what the scan reports host-wide after de-duplication")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
