"""What an SSH session does, decided without I/O (Coder's Go ``agent/agentssh`` rules).

Rules:

* **Session type**: the client-sent ``CODER_SSH_SESSION_TYPE`` (case-insensitive) picks the
  stats bucket: ``vscode``, ``jetbrains``; absent is ``ssh``; any other value is ``unknown``
  (counted nowhere, reported as unspecified). The variable never reaches the command.
* **File transfer** (``block_file_transfer``): the ``sftp`` subsystem, and exec commands whose
  first word's base name is ``nc``, ``rsync``, ``scp`` or ``sftp``, are refused with exit status 65;
  an exec session first gets ``"\\x02File transfer has been disabled.\\n"`` on stdout (scp's
  error framing), sftp gets nothing (its client would read it as a packet).
* **argv**: exec is ``[shell, "-c", command]``; no command is an interactive login shell
  ``[shell, "-l"]`` (argv0 is the shell's path, as Go's ``exec.Command``).
* **Exit status**: the process's; a death by signal is 255 (Go's ``-1 → 255``, as OpenSSH);
  a session that could not start is 229 (Go's ``MagicSessionErrorCode``).
* **Environment**: the daemon's environment, ``LOGNAME``/``SHELL``, then the client's variables
  (accepted, as Go), then :func:`~coder_agent.childenv.build_child_env` on top (so the
  agent's own variables win) with ``SSH_CLIENT``/``SSH_CONNECTION`` from the peer's address; a
  PTY adds ``TERM``, agent forwarding ``SSH_AUTH_SOCK``.
* **MOTD**: only for a login shell with a PTY, unless ``~/.hushlogin`` exists; each line ends in
  ``\\r\\n`` (the terminal is raw until the shell sets it up).
* **Host key seed**: SHA-256 over a domain label and the owner's user name, the workspace name and
  the agent name, NUL-separated: Go's inputs (``agent.SSHKeySeed``, coder/coder PR #17258), the
  names a client's ``known_hosts`` entry is filed under, not the IDs: a workspace deleted and
  re-created under the same name keeps its key, and a claimed prebuild (new owner, new name) gets
  the key of its new names. Go turns its FNV-1a seed into an RSA-2048 key through ``math/rand``;
  that key is not reproduced (ours is Ed25519), only when it stays and when it changes. The key
  is never logged nor shown.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..childenv import LoginUser, build_child_env

__all__ = [
    "BLOCKED_COMMANDS", "BLOCKED_EXIT", "BLOCKED_MESSAGE", "CONNECTION_TYPE", "SESSION_ERROR_EXIT", "SESSION_TYPE_VAR",
    "Peer",
    "exit_status", "file_transfer_blocked", "host_key_seed", "motd_bytes", "session_argv", "session_env",
    "session_type",
]

SESSION_TYPE_VAR = "CODER_SSH_SESSION_TYPE"
# agent.proto Connection.Type for each session type (ReportConnection); "unknown" is TYPE_UNSPECIFIED.
CONNECTION_TYPE = {"unknown": 0, "ssh": 1, "vscode": 2, "jetbrains": 3}
SESSION_TYPES = ("ssh", "vscode", "jetbrains")
BLOCKED_COMMANDS = frozenset({"nc", "rsync", "scp", "sftp"})
BLOCKED_EXIT = 65
BLOCKED_MESSAGE = b"\x02File transfer has been disabled.\n"
SESSION_ERROR_EXIT = 229


@dataclass(frozen=True)
class Peer:
    """Both ends of the client's connection as the session reports them (the tunnel's addresses
    when the tunnel registered them, else the loopback socket's)."""

    client_host: str
    client_port: int
    server_host: str = "0.0.0.0"
    server_port: int = 0


def session_type(client_env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The session's stats bucket and the client's variables without ``CODER_SSH_SESSION_TYPE``."""
    env = dict(client_env)
    raw = env.pop(SESSION_TYPE_VAR, None)
    if raw is None or raw == "":
        return "ssh", env
    kind = raw.strip().lower()
    return (kind if kind in SESSION_TYPES else "unknown"), env


def file_transfer_blocked(command: str | None, subsystem: str | None) -> bool:
    """Whether ``block_file_transfer`` refuses this session (see the module rules)."""
    if subsystem is not None:
        return subsystem == "sftp"
    if not command:
        return False
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    return bool(words) and os.path.basename(words[0]) in BLOCKED_COMMANDS


def session_argv(shell: str, command: str | None) -> list[str]:
    return [shell, "-c", command] if command else [shell, "-l"]


def exit_status(returncode: int) -> int:
    """The SSH exit status for a ``Popen.returncode`` (negative: killed by that signal)."""
    return 255 if returncode < 0 else returncode & 0xFF


def host_key_seed(owner: str, workspace: str, agent: str) -> bytes:
    return hashlib.sha256("\0".join(("coder-agent ssh host key", owner, workspace, agent)).encode()).digest()


def motd_bytes(text: str) -> bytes:
    return b"".join(line.encode() + b"\r\n" for line in text.splitlines())


def _address_vars(peer: Peer) -> dict[str, str]:
    return {
        "SSH_CLIENT": f"{peer.client_host} {peer.client_port} {peer.server_port}",
        "SSH_CONNECTION": f"{peer.client_host} {peer.client_port} {peer.server_host} {peer.server_port}",
    }


def session_env(
    process_env: Mapping[str, str],
    client_env: Mapping[str, str],
    *,
    user: LoginUser,
    bin_dir: Path,
    peer: Peer,
    manifest: Mapping[str, Any] | None = None,
    secrets: Any = (),
    agent_env: Mapping[str, str] | None = None,
    agent_url: str = "",
    token: str | None = None,
    token_in_env: bool = True,
    term: str | None = None,
    auth_sock: str | None = None,
) -> dict[str, str]:
    """The whole environment of a session's command (``client_env`` already without the type)."""
    base = dict(process_env)
    base["LOGNAME"] = user.name
    base["SHELL"] = user.shell
    base.setdefault("HOME", user.home)
    base.update(client_env)
    env = build_child_env(base, user=user, bin_dir=bin_dir, manifest=manifest, secrets=secrets,
                          agent_env=agent_env, agent_url=agent_url, token=token, token_in_env=token_in_env)
    env.update(_address_vars(peer))
    if term is not None:
        env["TERM"] = term
    if auth_sock:
        env["SSH_AUTH_SOCK"] = auth_sock
    return env
