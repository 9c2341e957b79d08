"""The agent's SSH server against OpenSSH's own sshd, both reached through the same tunnel, in
the same run.

    python -m bench.ssh [--quick] [--runs 30] [--mb 32] [--reps 3]

The path, identical for both up to the last hop: OpenSSH's ``ssh``/``sftp`` on the kernel's TCP in
wireguard-go's network namespace → wireguard-go → UDP<->DERP bridge → the devserver's DERP relay →
the REAL daemon (its WireGuard, its TCP in userspace, a splice to a loopback listener; the rig of
tests/tailnet/rig.py, shared with bench/tunnel.py) → either the daemon's own SSH server (tunnel
port 1) or the system's ``/usr/sbin/sshd``, started here on 127.0.0.1/::1 port P with its own
config (host key, one authorized client key, ``internal-sftp``) and reached as tunnel port P
through the agent's port forwarding.

Both are measured with the same client over one ControlMaster connection each (opened in the
namespace; the multiplexed clients below run outside it and reach the master by its socket):

* round trip — ``ssh -S ctl … true`` (a new session channel, the login shell's ``-c true``, the
  exit status back): the median of ``--runs``, the two servers' samples interleaved so that the
  shared machine's load falls on both alike;
* sftp put / get — one ``--mb`` MiB file through ``sftp -b`` on the same master connection
  (no handshake), ``--reps`` times each, interleaved likewise: the median MiB/s; the copies are
  checked byte for byte. The test rig's relay and bridges (Python, in this process) bound the
  tunnel's throughput for both (bench/tunnel.py measures it alone).

Ratios are ours / sshd's (times: above 1, we are slower; throughput: below 1, we are slower).
The daemon runs with HOME in a temporary directory and the clients send ``SHLVL=1``, so neither
server's shell reads a user's rc files. Needs root, /dev/net/tun, wireguard-go, wg and sshd.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import hashlib
import os
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench._util import row, tunnelled_daemon

SSHD = "/usr/sbin/sshd"


@dataclass
class Target:
    """One SSH server as the client sees it: a name, a tunnel port, a client key (None: no auth)."""

    name: str
    host: str
    port: int
    key: Path | None
    control: Path

    def opts(self) -> list[str]:
        o = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30",
             # bash sources ~/.bashrc for commands run by sshd unless SHLVL says it is nested: keep
             # the user's rc files out of both measures (the daemon's HOME is empty anyway).
             "-o", "SetEnv=SHLVL=1", "-o", f"ControlPath={self.control}"]
        if self.key is not None:
            o += ["-i", str(self.key), "-o", "IdentitiesOnly=yes"]
        return o

    @property
    def dest(self) -> str:
        return f"{getpass.getuser()}@{self.host}"


def _free_port() -> int:
    """A port free on both 127.0.0.1 and ::1 (sshd listens on both)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket(socket.AF_INET6) as s6:
                s6.bind(("::1", port))
        except OSError:
            continue
        return port


def _clear_stale_pyenv_lock() -> None:
    """A pyenv shim lock left by a killed shell makes every later root shell that runs
    ``pyenv init`` wait on it; one older than 2 minutes is stale."""
    lock = Path.home() / ".pyenv" / "shims" / ".pyenv-shim"
    try:
        if time.time() - lock.stat().st_mtime > 120:
            lock.unlink(missing_ok=True)
    except FileNotFoundError:
        pass


def _start_sshd(tmp: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    hostkey, userkey = tmp / "host_ed25519", tmp / "user_ed25519"
    for k in (hostkey, userkey):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k)], check=True)
    (tmp / "authorized_keys").write_text(userkey.with_suffix(".pub").read_text())
    cfg = tmp / "sshd_config"
    cfg.write_text(f"""Port {port}
ListenAddress 127.0.0.1
ListenAddress ::1
HostKey {hostkey}
PidFile none
UsePAM no
PermitRootLogin yes
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile {tmp / 'authorized_keys'}
Subsystem sftp internal-sftp
PrintMotd no
PrintLastLog no
AcceptEnv SHLVL
""")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege-separation directory
    log = open(tmp / "sshd.log", "wb")  # noqa: SIM115 -- sshd's -e log, for a failure's message
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stderr=log)
    log.close()
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, userkey
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"sshd did not start: {(tmp / 'sshd.log').read_text()[-2000:]}") from None
            time.sleep(0.05)


def _open_master(netns: str, target: Target) -> subprocess.Popen[bytes]:
    """``ssh -M -N`` in the namespace, through the tunnel; returns once its control socket answers."""
    master = subprocess.Popen(["ip", "netns", "exec", netns, "ssh", *target.opts(), "-p", str(target.port),
                               "-o", "ControlMaster=yes", "-N", target.dest],
                              stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while True:
        if target.control.exists() and subprocess.run(
                ["ssh", *target.opts(), "-O", "check", target.dest], capture_output=True).returncode == 0:
            return master
        if master.poll() is not None or time.monotonic() > deadline:
            _close_master(master)
            err = master.stderr.read().decode(errors="replace") if master.stderr else ""
            raise RuntimeError(f"{target.name}: no ControlMaster connection: {err[-2000:]}")
        time.sleep(0.1)


def _close_master(master: subprocess.Popen[bytes]) -> None:
    master.terminate()  # an OpenSSH master can linger on SIGTERM: then SIGKILL
    try:
        master.wait(5)
    except subprocess.TimeoutExpired:
        master.kill()
        master.wait()


def _mux(target: Target) -> list[str]:
    # ControlMaster=no: a client that cannot reach the master fails (the agent's address has no
    # route outside the namespace) rather than measuring something else.
    return [*target.opts(), "-o", "ControlMaster=no"]


def _round_trips(targets: list[Target], runs: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {t.name: [] for t in targets}
    for i in range(runs + 1):
        for t in targets if i % 2 else targets[::-1]:
            t0 = time.perf_counter()
            subprocess.run(["ssh", *_mux(t), t.dest, "true"], check=True)
            if i:  # the first one of each warms the page cache and the server's first-session paths
                samples[t.name].append(time.perf_counter() - t0)
    return samples


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _sftp(target: Target, tmp: Path, cmd: str, src: Path, dst: Path, digest: str) -> float:
    """One ``put``/``get`` of ``src`` to ``dst`` (both local paths: the servers run here as root)."""
    dst.unlink(missing_ok=True)
    batch = tmp / "batch"
    batch.write_text(f"{cmd} {src} {dst}\n")
    t0 = time.perf_counter()
    subprocess.run(["sftp", *_mux(target), "-b", str(batch), f"{getpass.getuser()}@[{target.host}]"], check=True,
                   stdout=subprocess.DEVNULL)
    took = time.perf_counter() - t0
    if _sha256(dst) != digest:
        raise RuntimeError(f"{target.name}: sftp {cmd} copied the file wrongly")
    dst.unlink()
    return took


def _measure(netns: str, targets: list[Target], tmp: Path, runs: int, mb: int, reps: int) -> dict[str, list[float]]:
    """Samples by measure: ``rt NAME`` in seconds, ``put NAME`` / ``get NAME`` in MiB/s."""
    masters = []
    try:
        for t in targets:
            masters.append(_open_master(netns, t))
        out = {f"rt {k}": v for k, v in _round_trips(targets, runs).items()}
        src = tmp / "src.bin"
        src.write_bytes(os.urandom(mb << 20))
        digest = _sha256(src)
        for rep in range(reps):
            for cmd in ("put", "get"):
                for t in targets if rep % 2 else targets[::-1]:
                    took = _sftp(t, tmp, cmd, src, tmp / f"{cmd}-{t.name}.bin", digest)
                    out.setdefault(f"{cmd} {t.name}", []).append(mb / took)
        return out
    finally:
        for m in masters:
            _close_master(m)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--mb", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3, help="sftp transfers of each kind per server")
    args = ap.parse_args()
    runs, mb = (10, 8) if args.quick else (args.runs, args.mb)
    if not Path(SSHD).exists():
        raise SystemExit(f"{SSHD} is missing (apt-get install openssh-server)")
    _clear_stale_pyenv_lock()
    # /tmp, short: the control sockets' paths must fit a unix socket address.
    with tempfile.TemporaryDirectory(prefix="ca-bs-", dir="/tmp") as d:
        tmp = Path(d)
        home = tmp / "home"  # the sessions' shell reads this HOME's rc files (none)
        home.mkdir()
        port = _free_port()
        sshd, key = _start_sshd(tmp, port)
        try:
            async with tunnelled_daemon(tmp, HOME=str(home)) as (_, rig):
                targets = [Target("ours", rig.agent_ip, 1, None, tmp / "cm-ours"),
                           Target("sshd", rig.agent_ip, port, key, tmp / "cm-sshd")]
                # In a thread: the relay and the bridges of the tunnel run on this event loop.
                res = await asyncio.to_thread(_measure, rig.wg.netns, targets, tmp, runs, mb, args.reps)
        finally:
            sshd.terminate()
            sshd.wait(10)
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"SSH server: coder-agent (tunnel port 1) vs OpenSSH sshd (tunnel port {port}, forwarded by the "
          f"agent), both through wireguard-go → DERP relay → daemon ({runs} round trips, {args.reps} x "
          f"{mb} MiB sftp put and get, medians)\n")
    print("| measure | coder-agent | sshd | ratio |")
    print("|---|---|---|---|")
    print(row("ssh true round trip (ControlMaster), through the tunnel", med["rt ours"] * 1000,
              med["rt sshd"] * 1000, "ms"))
    print(row("sftp put throughput, through the tunnel", med["put ours"], med["put sshd"], "MiB/s"))
    print(row("sftp get throughput, through the tunnel", med["get ours"], med["get sshd"], "MiB/s"))
    print()
    for name in ("ours", "sshd"):
        rt = sorted(x * 1000 for x in res[f"rt {name}"])
        print(f"{name}: round trip {rt[0]:.1f}–{rt[-1]:.1f} ms; sftp put "
              f"{' '.join(f'{x:.1f}' for x in res[f'put {name}'])} MiB/s, get "
              f"{' '.join(f'{x:.1f}' for x in res[f'get {name}'])} MiB/s")


if __name__ == "__main__":
    asyncio.run(main())
