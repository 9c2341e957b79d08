"""`coder-agent run` in a terminal, as a person debugging a template sees it.

The daemon runs on a real pseudo-terminal (stdlib ``pty``: it is the session leader and the
terminal's foreground process group), so Ctrl-C is the byte 0x03 typed into the terminal and
the kernel's line discipline turns it into SIGINT, exactly as at a shell prompt.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import poll, t

from .conftest import ThreadedDevServer

ANSI = re.compile(r"\x1b\[[0-9;]*m")
EXE = Path(sys.executable).parent / "coder-agent"


class Terminal:
    """A child process on a pseudo-terminal; collects everything it writes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: exec at once (the parent has threads)
            try:
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.status: int | None = None

    def _read(self) -> None:
        while True:
            r, _, _ = select.select([self.fd], [], [], 0.1)
            if not r:
                continue
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            with self._lock:
                self._buf += data

    @property
    def raw(self) -> str:
        with self._lock:
            return self._buf.decode(errors="replace")

    def lines(self) -> list[str]:
        """What a person reads: colours stripped, one entry per terminal line."""
        return [ANSI.sub("", ln) for ln in self.raw.replace("\r\n", "\n").split("\n") if ln.strip()]

    def wait_for(self, text: str, timeout: float = 20) -> None:
        poll(lambda: any(text in ln for ln in self.lines()), timeout)

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + t(timeout)
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                self._reader.join(5)
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        raise AssertionError(f"coder-agent still running after {t(timeout)} s:\n{self.raw[-2000:]}")

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
            except ProcessLookupError:
                pass
        os.close(self.fd)


@pytest.fixture
def ds() -> Iterator[ThreadedDevServer]:
    d = ThreadedDevServer().start()
    yield d
    d.stop()


@pytest.fixture
def term_env(ds: ThreadedDevServer, short_tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODER_AGENT_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update({
        "TERM": "xterm-256color",
        "CODER_AGENT_URL": ds.url,
        "CODER_AGENT_TOKEN": ds.token,
        "CODER_AGENT_API_ADDRESS": f"unix:{short_tmp / 'api.sock'}",
        "CODER_AGENT_LOG_DIR": str(short_tmp / "logs"),
        "CODER_AGENT_STATE_DIR": str(short_tmp / "state"),
        "CODER_AGENT_PROMETHEUS_ADDRESS": "",
        "CODER_AGENT_DEVCONTAINERS_ENABLE": "false",
    })
    return env


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    made: list[Terminal] = []
    yield made
    for term in made:
        term.close()


def test_console_progress_is_coloured_and_ctrl_c_stops_cleanly(
    term_env: dict[str, str], ds: ThreadedDevServer, terminals: list[Terminal]
) -> None:
    term = Terminal([str(EXE), "run"], term_env)
    terminals.append(term)
    term.wait_for("coderd reachable")
    progress = ["local API listening", "coder-agent started", "connecting to coderd", "coderd reachable"]
    lines = term.lines()
    at = [next(i for i, ln in enumerate(lines) if p in ln) for p in progress]
    assert at == sorted(at), lines  # in the order things happen
    for ln in lines:  # "2026-01-02T03:04:05.678Z [info     ] event   key=value ..."
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \[(info|warning) *\] \S", ln), ln
    assert ANSI.search(term.raw), "a terminal gets colours"
    assert ds.url in lines[at[-1]] and ds.token not in term.raw

    term.type(b"\x03")  # Ctrl-C
    assert term.wait() == 0
    tail = term.lines()[len(lines):]
    assert any("stop requested" in ln for ln in tail) and "coder-agent stopped" in tail[-1], tail
    assert not any("Traceback" in ln or "KeyboardInterrupt" in ln for ln in term.lines())


def test_log_format_json_gives_one_object_per_line(term_env: dict[str, str], terminals: list[Terminal]) -> None:
    term = Terminal([str(EXE), "run", "--log-format", "json"], term_env)
    terminals.append(term)
    term.wait_for('"coderd reachable"')
    term.type(b"\x03")
    assert term.wait() == 0
    lines = [ln for ln in term.lines() if ln != "^C"]  # the terminal echoes the Ctrl-C itself
    assert not ANSI.search(term.raw.replace("^C", ""))
    events = [json.loads(ln.removeprefix("^C")) for ln in lines]
    assert all({"event", "level", "timestamp", "component"} <= e.keys() for e in events), events
    names = [e["event"] for e in events]
    assert names.index("coder-agent started") < names.index("coderd reachable") < names.index("coder-agent stopped")


def test_configuration_error_is_one_line_in_the_terminal(term_env: dict[str, str], terminals: list[Terminal]) -> None:
    env = {k: v for k, v in term_env.items() if k != "CODER_AGENT_TOKEN"}
    term = Terminal([str(EXE), "run"], env)
    terminals.append(term)
    assert term.wait() == 78
    assert term.lines() == [
        "coder-agent: configuration error: CODER_AGENT_TOKEN: CODER_AGENT_TOKEN or CODER_AGENT_TOKEN_FILE "
        "must be set for token auth"
    ]


def test_scripts_starting_and_finishing_are_shown(
    term_env: dict[str, str], terminals: list[Terminal], short_tmp: Path
) -> None:
    cfg = short_tmp / "config.toml"
    cfg.write_text('[[scripts]]\ndisplay_name = "Say hello"\nscript = "echo hello"\n')
    term = Terminal([str(EXE), "run", "--config", str(cfg)], term_env)
    terminals.append(term)
    term.wait_for("start scripts finished")
    # The config-file scripts' phase may report before an (empty) manifest phase does, or after it.
    term.wait_for("script finished")
    mine = [ln for ln in term.lines() if "script='Say hello'" in ln]
    assert len(mine) == 2 and "script started" in mine[0], mine
    assert "script finished" in mine[1] and "exit_code=0" in mine[1] and "status=ok" in mine[1], mine
    term.type(b"\x03")
    assert term.wait() == 0
