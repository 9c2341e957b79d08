"""The SSH session policy (pure): Go's agentssh rules, without sockets or processes."""

from __future__ import annotations

from pathlib import Path

from coder_agent.childenv import LoginUser
from coder_agent.sshd.policy import (
    BLOCKED_MESSAGE,
    Peer,
    exit_status,
    file_transfer_blocked,
    host_key_seed,
    motd_bytes,
    session_argv,
    session_env,
    session_type,
)

USER = LoginUser("alice", "/home/alice", "/bin/zsh")


def test_session_type_is_stripped_and_case_insensitive() -> None:
    assert session_type({"CODER_SSH_SESSION_TYPE": "VSCode", "A": "1"}) == ("vscode", {"A": "1"})
    assert session_type({"CODER_SSH_SESSION_TYPE": "jetbrains"})[0] == "jetbrains"
    assert session_type({"A": "1"}) == ("ssh", {"A": "1"})
    assert session_type({"CODER_SSH_SESSION_TYPE": "emacs"}) == ("unknown", {})


def test_file_transfer_detection_as_go() -> None:
    assert file_transfer_blocked(None, "sftp")
    assert not file_transfer_blocked(None, "other")
    assert file_transfer_blocked("scp -t /tmp", None)
    assert file_transfer_blocked("/usr/bin/rsync --server --sender -vlogDtpre.iLsfxC . /x", None)
    assert file_transfer_blocked("nc localhost 80", None)
    assert file_transfer_blocked("'sftp' -b x", None)
    assert not file_transfer_blocked("echo scp", None)
    assert not file_transfer_blocked(None, None)  # a login shell
    assert not file_transfer_blocked("", None)
    assert BLOCKED_MESSAGE == b"\x02File transfer has been disabled.\n"


def test_argv_exit_status_motd_seed() -> None:
    assert session_argv("/bin/zsh", "ls -l") == ["/bin/zsh", "-c", "ls -l"]
    assert session_argv("/bin/zsh", None) == ["/bin/zsh", "-l"]
    assert session_argv("/bin/zsh", "") == ["/bin/zsh", "-l"]
    assert exit_status(7) == 7
    assert exit_status(-9) == 255  # killed by a signal: Go's -1 → 255
    assert motd_bytes("hi\nthere\n") == b"hi\r\nthere\r\n"
    a = host_key_seed("o", "w", "a")
    assert a == host_key_seed("o", "w", "a") and len(a) == 32
    assert a != host_key_seed("o", "w", "b") and a != host_key_seed("ow", "", "a")


def test_session_env_layers() -> None:
    env = session_env(
        {"PATH": "/usr/bin", "CODER": "false", "HOME": "/home/alice", "KEEP": "1"},
        {"FOO": "bar", "CODER_AGENT_TOKEN": "client-sent"},
        user=USER, bin_dir=Path("/data/bin"), peer=Peer("fd7a::1", 5555, "fd7a::2", 1),
        manifest={"workspace_name": "ws", "agent_name": "main", "owner": "me", "vs_code_port_proxy_uri": "https://p",
                  "environment": {"FROM_MANIFEST": "$KEEP-x"}},
        agent_env={"GIT_SSH_COMMAND": "/a gitssh --"}, token="secret", term="xterm", auth_sock="/tmp/agent.1")
    assert env["FOO"] == "bar" and env["KEEP"] == "1"
    assert env["CODER"] == "true" and env["CODER_WORKSPACE_NAME"] == "ws"
    assert env["CODER_AGENT_TOKEN"] == "secret"
    assert env["USER"] == env["LOGNAME"] == "alice" and env["SHELL"] == "/bin/zsh"
    assert env["SSH_CLIENT"] == "fd7a::1 5555 1" and env["SSH_CONNECTION"] == "fd7a::1 5555 fd7a::2 1"
    assert env["PATH"].startswith("/data/bin:")
    assert env["VSCODE_PROXY_URI"] == "https://p" and env["FROM_MANIFEST"] == "1-x"
    assert env["GIT_SSH_COMMAND"] == "/a gitssh --"
    assert env["TERM"] == "xterm" and env["SSH_AUTH_SOCK"] == "/tmp/agent.1"
    withheld = session_env({}, {"CODER_AGENT_TOKEN": "x"}, user=USER, bin_dir=Path("/b"), peer=Peer("h", 1),
                           token="secret", token_in_env=False)
    assert "CODER_AGENT_TOKEN" not in withheld
    assert "TERM" not in withheld and "SSH_AUTH_SOCK" not in withheld


def test_jetbrains_marker() -> None:
    from coder_agent.sshd.jetbrains import is_jetbrains

    assert is_jetbrains("/opt/idea/jbr/bin/java -Didea.vendor.name=JetBrains -cp x")
    assert is_jetbrains("java -DIDEA.VENDOR.NAME=jetbrains")
    assert not is_jetbrains("node server.js --port 3000")


def test_terminal_modes_applied() -> None:
    import termios

    from coder_agent.sshd.termmodes import apply_modes

    base = [termios.ICRNL, termios.OPOST, termios.CS7, termios.ECHO | termios.ICANON, 0, 0, [b"\x00"] * 32]
    out = apply_modes(base, {3: 8, 1: 255, 53: 0, 50: 1, 36: 0, 42: 1, 91: 1, 200: 7})
    assert out[6][termios.VERASE] == b"\x08" and out[6][termios.VINTR] == b"\x00"  # 255: disabled
    assert not out[3] & termios.ECHO and out[3] & termios.ISIG and out[3] & termios.ICANON
    assert not out[0] & termios.ICRNL and out[0] & 0o40000  # IUTF8
    assert out[2] & termios.CSIZE == termios.CS8
    assert base[6][termios.VERASE] == b"\x00"  # a copy


def test_listener_cmdlines_from_procfs(tmp_path: Path) -> None:
    import os

    from coder_agent.sshd.jetbrains import ListenerCmdlines

    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    line = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n"
    (proc / "net" / "tcp").write_text(header + line)  # 127.0.0.1:8080 listening, inode 4242
    (proc / "77" / "fd").mkdir(parents=True)
    os.symlink("socket:[4242]", proc / "77" / "fd" / "3")
    (proc / "77" / "cmdline").write_bytes(b"java\0-Didea.vendor.name=JetBrains\0")
    now = [0.0]
    f = ListenerCmdlines(proc, ttl=5, clock=lambda: now[0])
    assert f(8080) == "java -Didea.vendor.name=JetBrains"
    assert f(9090) == ""
    (proc / "77" / "cmdline").write_bytes(b"other\0")
    assert f(8080).startswith("java")  # within the TTL: the port's answer is reused
    now[0] = 10
    assert f(8080).startswith("java")  # same inode: still no walk
    (proc / "net" / "tcp").write_text(header + line.replace(" 4242 ", " 4343 "))
    os.symlink("socket:[4343]", proc / "77" / "fd" / "4")
    now[0] = 20
    assert f(8080) == "other"  # a new listener (inode): walked again


def test_connection_types_match_agent_proto() -> None:
    from coder_agent.rpc.proto import agent_pb2
    from coder_agent.sshd.policy import CONNECTION_TYPE

    t = agent_pb2.Connection
    assert CONNECTION_TYPE == {"unknown": t.TYPE_UNSPECIFIED, "ssh": t.SSH, "vscode": t.VSCODE,
                               "jetbrains": t.JETBRAINS}
