"""Client-side helpers for test_tunnel_ssh_clients.py, run inside the test's network namespace
(and, for ``check``, inside an SSH session on the daemon's side). Stdlib only.

    python ssh_client_helper.py pty TIMEOUT SSH_ARGV...   drive ``ssh -tt``'s terminal (below)
    python ssh_client_helper.py echo PORT                  echo server on 127.0.0.1:PORT ("ready" once up)
    python ssh_client_helper.py check HOST PORT TIMEOUT    one 100 kB echo round trip, retried until
                                                           TIMEOUT (forwards come up asynchronously)

``pty`` and ``check`` print one JSON object; ``check`` also exits 1 unless the bytes came back intact.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import socketserver
import struct
import subprocess
import sys
import termios
import time


def _winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """The master side of a pty whose slave is ``ssh``'s controlling terminal."""

    def __init__(self, argv: list[str], timeout: float) -> None:
        self.master, slave = os.openpty()
        _winsize(slave, 24, 80)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                     env={**os.environ, "TERM": "xterm"},
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.buf = b""
        self.timeout = timeout

    def expect(self, pattern: bytes, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while pattern not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO: ssh is gone
                    return False
                if not data:
                    return False
                self.buf += data
        return True

    def send(self, line: bytes) -> None:
        os.write(self.master, line + b"\n")


def pty_session(timeout: float, argv: list[str]) -> dict[str, object]:
    term = Terminal(argv, timeout)
    result: dict[str, object] = {}
    try:
        term.send(b"shopt -q login_shell && echo LOGIN_$((6*7)); echo TTY_${SSH_TTY:+set}")
        result["login_shell"] = term.expect(b"LOGIN_42")
        result["ssh_tty"] = term.expect(b"TTY_set")
        term.send(b"stty size | tr ' ' x")
        result["before"] = term.expect(b"24x80")
        # The kernel sends ssh SIGWINCH (the foreground group of its terminal); ssh sends a
        # window-change request, which travels on its own: ask again until it has arrived.
        _winsize(term.master, 40, 132)
        deadline = time.monotonic() + timeout
        result["after"] = False
        while time.monotonic() < deadline:
            term.send(b"stty size | tr ' ' x")
            if term.expect(b"40x132", timeout=1):
                result["after"] = True
                break
        term.send(b"exit 5")
        try:
            result["exit"] = term.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            result["exit"] = None
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
            term.proc.wait()
        os.close(term.master)
    result["output"] = term.buf[-2000:].decode(errors="replace")
    return result


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


def echo_server(port: int) -> None:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", port), _Echo) as server:
        print("ready", flush=True)
        server.serve_forever()


def round_trip(host: str, port: int, timeout: float) -> dict[str, object]:
    payload = os.urandom(100_000)
    deadline = time.monotonic() + timeout
    attempts, error = 0, ""
    while time.monotonic() < deadline:
        attempts += 1
        try:
            with socket.create_connection((host, port), timeout=10) as s:
                s.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
            if got == payload:
                return {"ok": True, "attempts": attempts}
            error = f"{len(got)} of {len(payload)} bytes came back"
        except OSError as e:
            error = f"{type(e).__name__}: {e}"
        time.sleep(0.1)
    return {"ok": False, "attempts": attempts, "error": error}


def main() -> int:
    mode = sys.argv[1]
    if mode == "pty":
        print(json.dumps(pty_session(float(sys.argv[2]), sys.argv[3:])))
        return 0
    if mode == "echo":
        echo_server(int(sys.argv[2]))
        return 0
    if mode == "check":
        result = round_trip(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        print(json.dumps(result))
        return 0 if result["ok"] else 1
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main())
