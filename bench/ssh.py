"""The agent's SSH server against OpenSSH's own sshd, both on loopback, in the same run.

    python -m bench.ssh [--quick] [--runs 30] [--mb 64]

* round trip — ``ssh … true`` over an already open ControlMaster connection (a new session
  channel, the login shell's ``-c true``, the exit status back): the median of ``--runs``;
* sftp put / get — one ``--mb`` MiB file through ``sftp -b`` (a new connection each, so the
  handshake is included; it is small next to the transfer), MiB/s.

Ratios are ours / sshd's for times, sshd's / ours for throughput (above 1: we are slower). The
sshd gets a temporary config (its own host key, one authorized key, ``internal-sftp``) on a free
port; the agent's server runs in a child process, as in the daemon. Not yet through the tunnel:
both are reached directly on 127.0.0.1 (the tunnel adds the same cost to both).
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._util import row

SERVE = r"""
import asyncio, sys
from pathlib import Path
from coder_agent.childenv import ChildEnv
from coder_agent.sshd.policy import host_key_seed
from coder_agent.sshd.server import SshServer

async def main():
    env = ChildEnv({}, Path(sys.argv[1]))
    env.set_manifest({"workspace_name": "bench", "agent_name": "main", "owner": "me"}, [])
    server = SshServer(env, host_key_seed=host_key_seed("me", "bench", "main"), require_registered_peer=False)
    print(await server.start(), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop()

asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _opts(tmp: Path, key: Path | None) -> list[str]:
    o = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
         # bash sources ~/.bashrc for commands run by sshd unless SHLVL says it is nested: keep the
         # user's rc files (here: a pyenv that can wait a minute for a lock) out of both measures.
         "-o", "SetEnv=SHLVL=1"]
    if key is not None:
        o += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
    return o


def _start_sshd(tmp: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    hostkey, userkey = tmp / "host_ed25519", tmp / "user_ed25519"
    for k in (hostkey, userkey):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k)], check=True)
    (tmp / "authorized_keys").write_text(userkey.with_suffix(".pub").read_text())
    cfg = tmp / "sshd_config"
    cfg.write_text(f"""Port {port}
ListenAddress 127.0.0.1
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
AcceptEnv SHLVL
""")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege-separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)], stderr=subprocess.DEVNULL)
    return proc, userkey


def _wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _round_trips(tmp: Path, name: str, port: int, key: Path | None, runs: int) -> float:
    user = getpass.getuser()
    cp = tmp / f"cm-{name}"
    base = ["ssh", *_opts(tmp, key), "-p", str(port), "-o", f"ControlPath={cp}"]
    master = subprocess.Popen([*base, "-o", "ControlMaster=yes", "-N", f"{user}@127.0.0.1"])
    try:
        deadline = time.monotonic() + 20
        while not cp.exists():
            if time.monotonic() > deadline or master.poll() is not None:
                raise RuntimeError(f"{name}: no ControlMaster")
            time.sleep(0.05)
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([*base, f"{user}@127.0.0.1", "true"], check=True)
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples)
    finally:
        master.terminate()  # an OpenSSH master can linger on SIGTERM: then SIGKILL
        try:
            master.wait(5)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()


def _sftp(tmp: Path, port: int, key: Path | None, batch: str) -> float:
    b = tmp / "batch"
    b.write_text(batch)
    t0 = time.perf_counter()
    subprocess.run(["sftp", *_opts(tmp, key), "-P", str(port), "-b", str(b), f"{getpass.getuser()}@127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--mb", type=int, default=64)
    args = ap.parse_args()
    runs, mb = (10, 16) if args.quick else (args.runs, args.mb)
    with tempfile.TemporaryDirectory(prefix="bench-ssh-") as d:
        tmp = Path(d)
        ours = subprocess.Popen([sys.executable, "-W", "ignore", "-c", SERVE, str(tmp / "data")],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert ours.stdout is not None
        line = ours.stdout.readline()
        while not line.strip().isdigit():  # the server's own log lines come first
            if not line:
                raise RuntimeError("the agent's SSH server did not start")
            line = ours.stdout.readline()
        our_port = int(line)
        sshd_port = _free_port()
        sshd, key = _start_sshd(tmp, sshd_port)
        try:
            _wait_port(sshd_port)
            rt_ours = _round_trips(tmp, "ours", our_port, None, runs)
            rt_sshd = _round_trips(tmp, "sshd", sshd_port, key, runs)
            src = tmp / "src.bin"
            src.write_bytes(os.urandom(mb * 1024 * 1024))
            put = f"put {src} {tmp / 'up.bin'}\n"
            get = f"get {src} {tmp / 'down.bin'}\n"
            put_ours, put_sshd = _sftp(tmp, our_port, None, put), _sftp(tmp, sshd_port, key, put)
            get_ours, get_sshd = _sftp(tmp, our_port, None, get), _sftp(tmp, sshd_port, key, get)
        finally:
            sshd.terminate()
            sshd.wait()
            assert ours.stdin is not None
            ours.stdin.close()
            ours.wait(30)
    print(f"SSH server: coder-agent vs OpenSSH sshd on loopback ({runs} round trips, {mb} MiB sftp)\n")
    print("| measure | coder-agent | sshd | ratio |")
    print("|---|---|---|---|")
    print(row("ssh true round trip (ControlMaster)", rt_ours * 1000, rt_sshd * 1000, "ms"))
    print(row("sftp put time", put_ours, put_sshd, "s"))
    print(row("sftp get time", get_ours, get_sshd, "s"))
    print(f"\nsftp put: {mb / put_ours:.1f} MiB/s vs {mb / put_sshd:.1f}; "
          f"get: {mb / get_ours:.1f} MiB/s vs {mb / get_sshd:.1f}")


if __name__ == "__main__":
    main()
